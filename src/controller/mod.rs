//! Client of the Master Controller REST API (see `shared/controller-protocol.md`).
