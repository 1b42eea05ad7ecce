//! Hostile layers, hostile callers and bad input, one module per kind:
//! symlinks, limits, special names and files, callers. The server must never
//! read or write outside the layer roots (a canary dir outside the layers is
//! checked, and host `/etc` is never written), never follow a symlink inside
//! a layer and never hang.
//!
//! Most scenarios run on our binary and on kernel overlayfs and compare the
//! results (see `common::scenario`).

#[path = "../common/mod.rs"]
mod common;
mod support;

mod callers;
mod limits;
mod special;
mod symlinks;
