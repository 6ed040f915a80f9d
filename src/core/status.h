// Errors as values on the data path.
//
// A Status is an errno code (0 = success) with an optional context string.
// The code is what the NBD front end maps onto the wire, so every failure
// must pick the errno a client would expect (EIO, ENOSPC, EINVAL, EPERM...).
// The context string is only for humans (logs, CLI) and never on the data
// path's hot success case: an OK Status allocates nothing.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace bowstack {

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return {}; }
  // REQUIRES: err > 0 (an errno value).
  static Status Error(int err, std::string context = {}) { return Status(err, std::move(context)); }

  bool ok() const { return code_ == 0; }
  explicit operator bool() const { return ok(); }
  int code() const { return code_; }
  const std::string& context() const { return context_; }
  // "context: strerror(code)" or just strerror(code).
  std::string message() const;

 private:
  Status(int code, std::string context) : code_(code), context_(std::move(context)) {}
  int code_ = 0;
  std::string context_;
};

// A value or an error Status. Used for construction and configuration paths
// where a message matters more than speed.
// The one sentence to show a human: an EINVAL or EBUSY carries a whole
// sentence in its context, where strerror would only add "Invalid argument"
// or "Device or resource busy"; any other code keeps the errno text, which
// says what the system refused ("context: No space left on device").
std::string why(const Status& s);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }
  // REQUIRES: !ok().
  const Status& status() const { return std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace bowstack
