//! Builders turn a planned target into an image. They never know where the image goes.
//! `oci` assembles layers in-process (like ko and Jib); `docker` has a Docker engine build them.

pub mod docker;
pub mod dockerignore;
pub mod oci;
