//! The agent end to end against the simulator: the flow, authentication, what gateways and
//! hostile or confused dispatchers send.

mod approval;
mod auth_variants;
mod bad_input;
mod disclosures;
mod fidelity;
mod flow;
mod hostile_dispatcher;
mod idat_fidelity;
mod listing_flood;
mod release_policy;
mod withdrawal;
