//! What a lookup asks each lower layer for, as the redirects met on the way
//! down change it: shared by the lookup walk and the metacopy data search.

use std::ffi::OsString;

use crate::format::Redirect;

/// What a lookup asks the lower layers for, as redirects met on the way
/// down change it (the kernel's `ovl_lookup` name and `absolute_redirect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// The name looked up, in the parent's lower dirs.
    Own,
    /// Another name in the parent's lower dirs (a relative redirect).
    Name(OsString),
    /// A path from each layer's root (an absolute redirect).
    Path(Vec<OsString>),
}

impl From<Redirect> for Want {
    fn from(r: Redirect) -> Want {
        match r {
            Redirect::Relative(n) => Want::Name(n),
            Redirect::Absolute(p) => Want::Path(p),
        }
    }
}

impl Want {
    /// A redirect found in a lower dir applies to the layers below it: a
    /// relative one renames the last step, an absolute one starts over.
    pub(super) fn then(self, r: Redirect) -> Want {
        match (self, r) {
            (Want::Path(mut p), Redirect::Relative(n)) => {
                p.pop();
                p.push(n);
                Want::Path(p)
            }
            (_, r) => Want::from(r),
        }
    }
}
