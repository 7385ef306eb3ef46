//! What the backends share and that is not a backend: how a sink is built from its
//! config ([`build`]), I/O errors as sink errors, and fitting records into size-limited
//! messages. Not a place for one backend's code.

pub mod build;
pub mod io_error;
pub mod message_fit;
