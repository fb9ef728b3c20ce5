//! Loading the configuration: defaults, the environment, secrets, credentials, errors.

mod credentials;
mod errors;
mod load;
mod secrets;
