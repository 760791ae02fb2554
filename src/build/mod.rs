//! Builders turn a planned target into an image. They never know where the image goes.
//! `oci` assembles layers in-process (like ko and Jib).

pub mod oci;
