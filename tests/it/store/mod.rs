//! The store: opening, records, tasks, sealing, backups, and the store commands.

mod backup;
mod cli;
mod disclosures;
mod open;
mod records;
mod sealing;
mod tasks;
