//! Indexes of one object. The differ holds two objects whose section and symbol indexes mean
//! different things; a [`Sec`] or [`Sym`] carries which object it indexes ([`Orig`] or
//! [`Patched`]), so that using an index of one object on the other does not compile. The tables
//! the differ keeps per section or symbol are [`IdxVec`]s, indexed the same way.
//!
//! ```
//! use kpatch_diff::index::{IdxVec, PatchedSec};
//! fn included(inc: &IdxVec<PatchedSec, bool>, sec: PatchedSec) -> bool {
//!     inc[sec]
//! }
//! ```
//!
//! An original section's index does not index a table of the patched object:
//!
//! ```compile_fail
//! use kpatch_diff::index::{IdxVec, OrigSec, PatchedSec};
//! fn included(inc: &IdxVec<PatchedSec, bool>, sec: OrigSec) -> bool {
//!     inc[sec]
//! }
//! ```

use kpatch_elf::{SectionIndex, SymbolIndex};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// The original object (the unpatched build: what the kernel runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Orig {}

/// The patched object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Patched {}

macro_rules! index_type {
    ($name:ident, $raw:ident, $what:literal) => {
        #[doc = concat!("The index of a ", $what, " of object `S`.")]
        pub struct $name<S>(usize, PhantomData<fn() -> S>);

        impl<S> $name<S> {
            /// The index `raw` of object `S`: only where `raw` was read from that object.
            pub(crate) fn from_raw(raw: $raw) -> Self {
                $name(raw.0, PhantomData)
            }
            /// The index in the object's own terms, for the ELF model.
            pub fn raw(self) -> $raw {
                $raw(self.0)
            }
            pub fn get(self) -> usize {
                self.0
            }
        }
        impl<S> Clone for $name<S> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<S> Copy for $name<S> {}
        impl<S> PartialEq for $name<S> {
            fn eq(&self, other: &Self) -> bool {
                self.0 == other.0
            }
        }
        impl<S> Eq for $name<S> {}
        impl<S> PartialOrd for $name<S> {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl<S> Ord for $name<S> {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.0.cmp(&other.0)
            }
        }
        impl<S> Hash for $name<S> {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.0.hash(state)
            }
        }
        impl<S> fmt::Debug for $name<S> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        impl<S> Idx for $name<S> {
            fn index(self) -> usize {
                self.0
            }
        }
    };
}

index_type!(Sec, SectionIndex, "section");
index_type!(Sym, SymbolIndex, "symbol");

pub type OrigSec = Sec<Orig>;
pub type PatchedSec = Sec<Patched>;
pub type OrigSym = Sym<Orig>;
pub type PatchedSym = Sym<Patched>;

/// A typed index.
pub trait Idx: Copy {
    fn index(self) -> usize;
}

/// A table with one value per section or symbol of one object, indexed by `I`.
#[derive(Clone, PartialEq, Eq)]
pub struct IdxVec<I, T> {
    values: Vec<T>,
    _index: PhantomData<fn(I)>,
}

impl<I, T: Clone> IdxVec<I, T> {
    /// `n` copies of `value`.
    pub fn filled(value: T, n: usize) -> Self {
        IdxVec {
            values: vec![value; n],
            _index: PhantomData,
        }
    }
}

impl<I, T> IdxVec<I, T> {
    pub fn from_vec(values: Vec<T>) -> Self {
        IdxVec {
            values,
            _index: PhantomData,
        }
    }
    /// The values, in index order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.values.iter()
    }
    /// The values, in index order, mutably.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.values.iter_mut()
    }
}

impl<I: Idx, T> IdxVec<I, T> {
    pub fn get(&self, i: I) -> Option<&T> {
        self.values.get(i.index())
    }
}

impl<I: Idx, T> Index<I> for IdxVec<I, T> {
    type Output = T;
    fn index(&self, i: I) -> &T {
        &self.values[i.index()]
    }
}

impl<I: Idx, T> IndexMut<I> for IdxVec<I, T> {
    fn index_mut(&mut self, i: I) -> &mut T {
        &mut self.values[i.index()]
    }
}

impl<I, T: fmt::Debug> fmt::Debug for IdxVec<I, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.values.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_indexed_by_their_objects_indexes() {
        let mut t: IdxVec<PatchedSec, bool> = IdxVec::filled(false, 3);
        let i = PatchedSec::from_raw(SectionIndex(2));
        t[i] = true;
        assert_eq!(
            t.values().copied().collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(i.raw(), SectionIndex(2));
        assert_eq!(t.get(PatchedSec::from_raw(SectionIndex(7))), None);
        // `t[OrigSec::from_raw(..)]` does not compile: the table is the patched object's.
    }
}
