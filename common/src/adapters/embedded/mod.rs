//! In-process adapters: the whole system on one machine, with no AWS account.

mod cipher;
mod queue;
mod store;

pub use cipher::LocalCipher;
pub use queue::{LocalQueue, ReceivedMessage};
pub use store::MemoryStore;

use crate::error::StoreError;

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Unavailable("a previous holder of the store lock panicked".into())
}
