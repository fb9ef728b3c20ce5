//! What lives outside the code: the container contract, the systemd unit's hardening.

mod container_contract;
mod hardening;
