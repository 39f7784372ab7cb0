//! The machinery under every control loop: informers (cached list + watch), work queues with
//! per-key back-off, and leader election on a Lease.

pub mod informer;
pub mod leader;
pub mod queue;

pub use informer::{enqueue_adopters, enqueue_controller, enqueue_self, key_of, Change, Informer};
pub use leader::LeaderElection;
pub use queue::WorkQueue;
