// Side files kept as RBD images (bow's resume journal beside an RBD data
// image, docs/rbd.md): an Env whose paths name images.
//
// Path syntax, as qemu spells RBD images: "rbd:POOL/IMAGE:conf=PATH:id=ID"
// (both options required, in this order; `rbd_file_path` writes them).
// Every open() connects to the cluster on its own: side files are opened
// rarely (at a checkpoint's start, at restore), and a File then owns its
// connection and image handle.
//
// Durability: File::write goes to librbd's cache and sync() flushes it to
// the OSDs. A file's size is the image's size: a write past it grows the
// image first (rbd_resize, durable when it returns), truncate() resizes.
// Creating and removing an image are durable once they return, so
// sync_dir() has nothing to do.
//
// Thread-safety: as Env and File. Lifetime: rbd_env() is static.
#pragma once

#include <string>

#include "core/env.h"

namespace bowstack {

struct RbdLeaf;

// The Env for "rbd:" paths; any other path is refused with EINVAL.
Env* rbd_env();
// The side-file path of an image (its snapshot is ignored).
std::string rbd_file_path(const RbdLeaf& leaf);

}  // namespace bowstack
