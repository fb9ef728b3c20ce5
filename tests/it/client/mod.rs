//! The fTTP client against real HTTP servers on loopback.

mod http;
mod limits;
mod provide;
mod tls;
