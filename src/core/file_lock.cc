#include "core/file_lock.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

namespace bowstack {

namespace {

struct flock whole_file(short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 0;  // to the end, however far the file grows
  return fl;
}

// OFD locks carry no PID (F_OFD_GETLK reports -1), but /proc/PID/fdinfo/FD
// lists the locks of every open file: "lock:\t1: OFDLCK ADVISORY WRITE -1
// fe:00:10952957 0 EOF". Finds a process other than this one whose open
// file holds a lock on the same device and inode (this process included:
// two opens of one file in one process conflict too).
pid_t find_holder(const struct stat& st) {
  const std::string key = fmt::format(" {:02x}:{:02x}:{} ", major(st.st_dev), minor(st.st_dev), st.st_ino);
  DIR* proc = ::opendir("/proc");
  if (!proc) return -1;
  pid_t found = -1;
  while (found < 0) {
    struct dirent* e = ::readdir(proc);
    if (!e) break;
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    const std::string dir = fmt::format("/proc/{}/fdinfo", pid);
    DIR* fds = ::opendir(dir.c_str());
    if (!fds) continue;
    while (struct dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      std::ifstream in(dir + "/" + f->d_name);
      std::string line;
      bool hit = false;
      while (std::getline(in, line)) {
        if (line.rfind("lock:", 0) == 0 && line.find(key) != std::string::npos) hit = true;
      }
      if (hit) {
        found = static_cast<pid_t>(pid);
        break;
      }
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  return found;
}

std::string holder_text(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return "another process";
  const pid_t pid = find_holder(st);
  if (pid <= 0) return "another process";
  if (pid == ::getpid()) return fmt::format("this process ({}), through another open of the same file", pid);
  std::string comm;
  std::ifstream in(fmt::format("/proc/{}/comm", pid));
  std::getline(in, comm);
  return comm.empty() ? fmt::format("process {}", pid) : fmt::format("process {} ({})", pid, comm);
}

}  // namespace

Status lock_file(int fd, const std::string& what, bool exclusive) {
  struct flock fl = whole_file(exclusive ? F_WRLCK : F_RDLCK);
  if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return Status::Ok();
  const int err = errno;
  if (err != EAGAIN && err != EACCES) {
    return Status::Error(err, fmt::format("cannot lock {}", what));
  }
  return Status::Error(EBUSY, fmt::format("{} is in use by {}, which holds it open{}; stop that first", what,
                                          holder_text(fd), exclusive ? "" : " for writing"));
}

pid_t write_lock_holder(int fd) {
  struct flock fl = whole_file(F_RDLCK);
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type == F_UNLCK) return 0;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return -1;
  return find_holder(st);
}

}  // namespace bowstack
