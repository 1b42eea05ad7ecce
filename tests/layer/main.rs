//! OCI layers (`unionfs::oci`): an upper written through the union is
//! exported as a layer tar, and the tar, used as a new lower on top of the
//! old lowers, shows exactly what the union showed, both when unpacked by
//! us (kernel format: char 0/0 whiteouts, opaque xattrs) and when extracted
//! by GNU tar (OCI format: `.wh.` files). GNU tar and Python's tarfile read
//! the tarball; exports are reproducible; hostile tarballs are refused
//! without writing outside the target.
//!
//! Modules: export (union to layer and back), unpack (foreign and hostile
//! tarballs).

#[path = "../common/mod.rs"]
mod common;
mod support;

mod export;
mod unpack;
