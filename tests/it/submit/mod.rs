//! `submit`: reading a site's export, registration in batches.

mod input;
mod register;
