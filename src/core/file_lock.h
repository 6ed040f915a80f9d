// Exclusive ownership of files (OFD locks, fcntl F_OFD_SETLK).
//
// Whoever opens an image or side store for writing (a server, an offline
// tool) holds a write lock on the whole file for as long as it has it open;
// whoever serves it read-only holds a read lock. A second opener fails at
// once with EBUSY and a message naming the file and, when it can be found
// in /proc, the holder's PID. OFD locks belong to the open file, not the
// process: they are released when the file is closed (or the holder dies),
// never by another descriptor of the same process closing.
#pragma once

#include <sys/types.h>

#include <string>

#include "core/status.h"

namespace bowstack {

// Locks the whole file open on `fd`: a write lock when `exclusive`, else a
// read lock. `what` names the file in the error ("image 'disk.img'").
Status lock_file(int fd, const std::string& what, bool exclusive);
// 0 when nobody holds a write lock on the file; otherwise the holder's PID,
// or -1 when the holder could not be identified.
pid_t write_lock_holder(int fd);

}  // namespace bowstack
