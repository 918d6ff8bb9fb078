//! The container itself: the kernel seam ([`sys`]), the user namespace and
//! identity ([`namespace`], [`passwd`]), the mount tree ([`rootfs`], with
//! the binds it is planned from, [`binds`], and paths resolved inside it,
//! [`paths`]), and the payload ([`process`]).

pub mod binds;
pub mod mountspec;
pub mod namespace;
pub mod passwd;
pub mod paths;
pub mod process;
pub mod rootfs;
pub mod sys;
