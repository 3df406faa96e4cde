//! Filesystem access confined to a root directory.
//!
//! Builds and lazy reads work on trees that someone else wrote: a build context, an unpacked
//! image, a stage's root, the output directory of `starget get`. Any of them may hold a
//! symlink pointing anywhere (`lnk -> /etc`, `up -> ../../..`). [`Root`] resolves every path
//! inside its root the way a chroot or `openat2(RESOLVE_IN_ROOT)` does (and as BuildKit and
//! `filepath-securejoin` do): an absolute symlink target restarts at the root, `..` stops at
//! it. The walk goes one component at a time from a descriptor of the root with
//! `O_NOFOLLOW | O_DIRECTORY`, so the kernel never follows a symlink for it.
//!
//! - Reads: [`Root::open_file`] (`openat2(RESOLVE_IN_ROOT)` where the kernel has it, the walk
//!   otherwise), [`Root::read_dir`], [`Root::host_path`] (a host path with no symlink on the
//!   way, for code that walks trees with `lstat` and never follows the last component).
//! - Writes: [`Root::create_parent`] and [`Root::dir`] with `create` give a directory
//!   descriptor to create entries in with `*at` calls; [`remove_all_at`] removes a tree
//!   without following symlinks.
//!
//! The threat model is hostile content in the tree, not a concurrent process rewriting it
//! while it is read: paths handed out by [`Root::host_path`] are symlink-free when returned.

mod root;

pub use root::{
    Dir, MAX_OPEN_DEPTH, Resolved, Root, components, dir_flags, list_dir, remove_all_at,
};
