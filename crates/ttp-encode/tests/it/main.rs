//! The integration tests of ttp-encode: one binary, a module per former test file.

mod clk_generated;
mod clk_vectors;
mod fttp_vector;
mod normalise;
mod profile;
