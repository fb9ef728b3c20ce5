//! Bloom-filter encoders, bit-exact with the tools the fTTP and the anonlink ecosystem use.
//!
//! * [`fttp`]: the Mainzelliste fTTP client's record-level, balanced, random-hashing filter
//!   (the format THS's E-PIX consumes), with [`java_random`] reproducing `java.util.Random`.
//! * [`clk`]: Data61's clkhash 0.18.3 CLK for linkage schema v3.
//! * [`normalise`]: the configurable, versioned normalisation that runs *before* a core; the
//!   cores never normalise on their own, so they stay testable against their vectors.
//! * [`profile`]: an encoding profile (configuration) = normalisation + one core + field mapping.
//! * [`secret`]: seeds and keys, zeroised on drop and redacted in `Debug`.
//!
//! No network, no store, no global state.

pub mod clk;
pub mod fttp;
pub mod java_random;
pub mod normalise;
pub mod profile;
pub mod secret;

pub use secret::Secret;
