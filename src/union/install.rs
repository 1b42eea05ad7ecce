//! The in-memory nodes behind the names the kernel knows: installing a
//! resolved name (a fresh node, or the one it already has), forgetting it,
//! and following a name's removal or move.

use std::ffi::{CStr, OsStr};
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::format::cname;
use crate::node::{Body, LayerDir, Node, State};
use crate::sys;
use crate::sys::fs::bfd;

use super::{is_absent, Entry, Resolved, Union, ROOT_INO};

impl Union {
    /// Builds or refreshes the node for a resolved name, counting one lookup.
    pub(super) fn install(&self, parent: &Arc<Node>, name: &OsStr, r: Resolved) -> Result<Entry> {
        let cn = cname(name)?;
        let kind = r.kind;
        let body = r.body.clone();
        // Whether `n` remembers this very name: then resolve's stat tells
        // what the name holds now, without a second lstat.
        let here = |n: &Arc<Node>| {
            let st = n.state.read();
            st.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent)) && st.name == cn
        };
        let resolved_here =
            |n: &Arc<Node>| here(n) && (r.st.st_dev, r.st.st_ino) == self.leaf_real(n);
        let node = self.nodes.lookup_or_insert(
            r.ino,
            // A single-link object whose remembered name no longer holds it,
            // or a removed dir, is gone: its inode number was reused for
            // this new object, which gets a node of its own (see
            // `NodeTable::lookup_or_insert`), so the kernel never mixes them.
            |n| {
                n.kind == kind
                    && n.ino != ROOT_INO
                    && if n.is_dir() {
                        !self.dir_gone(n)
                    } else {
                        r.st.st_nlink > 1 || resolved_here(n) || !self.leaf_gone(n)
                    }
            },
            |n| {
                // A hard link whose remembered name was unlinked while this
                // one stayed takes this name as its own.
                let stale = !n.is_dir()
                    && if here(n) {
                        (r.st.st_dev, r.st.st_ino) != self.leaf_real(n)
                    } else {
                        self.leaf_gone(n)
                    };
                let mut st = n.state.write();
                if stale {
                    st.parent = Some(parent.clone());
                    st.name = cn.clone();
                    st.body = body.clone();
                }
                let primary =
                    st.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent)) && st.name == cn;
                // An upper part found on disk that the node does not know yet.
                match (&mut st.body, &body) {
                    (Body::Dir(cur), Body::Dir(new)) if cur.upper.is_none() => {
                        cur.upper = new.upper.clone();
                    }
                    (Body::Leaf(cur), Body::Leaf(new)) if cur.upper.is_none() && primary => {
                        cur.upper = new.upper.clone();
                        cur.real = new.real;
                        cur.data = new.data.clone();
                    }
                    _ => {}
                }
                if !primary
                    && !st
                        .aliases
                        .iter()
                        .any(|(p, a)| Arc::ptr_eq(p, parent) && *a == cn)
                {
                    st.aliases.push((parent.clone(), cn.clone()));
                }
            },
            |id, generation| {
                Node::new(
                    id,
                    generation,
                    kind,
                    State {
                        parent: Some(parent.clone()),
                        name: cn.clone(),
                        aliases: Vec::new(),
                        body: r.body.clone(),
                    },
                )
            },
        );
        if r.st.st_nlink > 1
            && matches!(&r.body, Body::Leaf(l) if l.upper.is_some())
            && self.linked_key(self.leaf_real(&node)).is_none()
        {
            self.remember_linked(&node);
        }
        let attr = self.present(self.attr_of(&node).unwrap_or(r.st));
        Ok(Entry {
            ino: node.ino,
            generation: node.generation,
            attr,
            node,
        })
    }

    /// The node for a resolved name without counting a kernel lookup.
    pub(super) fn install_transient(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        r: &Resolved,
    ) -> Result<Arc<Node>> {
        let e = self.install(parent, name, r.clone())?;
        self.nodes.drop_lookup(&e.node);
        Ok(e.node)
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if ino != ROOT_INO {
            self.nodes.forget(ino, n);
            if self.nodes.shrank() {
                sys::proc::trim_heap();
            }
        }
    }

    /// Drops `parent/name` from the node that carried it.
    pub(super) fn forget_name(&self, parent: &Arc<Node>, name: &CStr, ino: u64) {
        let Some(node) = self.nodes.current(ino) else {
            return;
        };
        let mut st = node.state.write();
        st.aliases
            .retain(|(p, n)| !(Arc::ptr_eq(p, parent) && n.as_c_str() == name));
        let primary = st.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent))
            && st.name.as_c_str() == name;
        if primary {
            if let Some((p, n)) = st.aliases.pop() {
                // Another name of the same object takes over, in the layer
                // where the object is.
                if let (Body::Leaf(l), Some(pb)) = (&mut st.body, p.dir_body()) {
                    if l.upper.is_some() {
                        l.upper = pb.upper.as_ref().map(|u| u.dir.clone());
                    }
                    if let Some((layer, dir)) = &mut l.lower {
                        if let Some(ld) = pb.lowers.iter().find(|d| d.layer == *layer) {
                            *dir = ld.dir.clone();
                        }
                    }
                }
                st.parent = Some(p);
                st.name = n;
            }
        }
    }

    pub(super) fn move_node(
        &self,
        node: &Arc<Node>,
        from: &Arc<Node>,
        from_name: &CStr,
        to: &Arc<Node>,
        to_name: &CStr,
        to_upper: &LayerDir,
    ) {
        let mut st = node.state.write();
        let primary = st.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, from))
            && st.name.as_c_str() == from_name;
        if primary {
            st.parent = Some(to.clone());
            st.name = to_name.to_owned();
            match &mut st.body {
                Body::Leaf(l) => l.upper = Some(to_upper.dir.clone()),
                Body::Dir(d) => {
                    if let Some(u) = &d.upper {
                        u.dir.moved(&to_upper.dir, to_name);
                    }
                }
            }
        } else {
            for (p, n) in st.aliases.iter_mut() {
                if Arc::ptr_eq(p, from) && n.as_c_str() == from_name {
                    *p = to.clone();
                    *n = to_name.to_owned();
                }
            }
        }
    }

    /// Whether a dir node's upper dir was removed (lower dirs never are).
    fn dir_gone(&self, n: &Node) -> bool {
        n.dir_body()
            .and_then(|d| d.upper)
            .is_some_and(|u| match u.fd() {
                Ok(fd) => sys::fs::fstat(bfd(&fd)).is_ok_and(|st| st.st_nlink == 0),
                // Closed, and no longer where it was.
                Err(e) => e == Errno::ESTALE || is_absent(e),
            })
    }

    /// Whether a non-dir node's remembered name no longer holds its object.
    fn leaf_gone(&self, n: &Node) -> bool {
        self.checked_leaf(n).is_err()
    }
}
