//! mc-sim: a simulator of the Master Controller's cloudlet maintenance API.
