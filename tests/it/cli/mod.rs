//! Commands through the binary: `encode`, `init`, `check`, `resolve`, `withdraw`, `healthcheck`, errors,
//! secrets in output, broken pipes, ownership.

mod broken_pipe;
mod check;
mod encode;
mod errors;
mod healthcheck;
mod init;
mod ownership;
mod resolve;
mod secrets;
mod withdraw;
