//! `when_full: block`, shared by both queues: a pusher waits for room, in arrival
//! order, until a deadline, then is told to back off. Not what "room" means: each queue
//! decides that in the `try_put` it passes.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::RETRY_AFTER;
use crate::chain::Refusal;

pub(crate) struct WaitForRoom {
    /// Waiting pushers are served in arrival order (tokio's mutex is fair): a large
    /// request is not starved by small ones slipping in ahead of it.
    line: tokio::sync::Mutex<()>,
    /// Wakes the pusher at the head of the line.
    room: Notify,
}

impl WaitForRoom {
    pub(crate) fn new() -> Self {
        Self {
            line: tokio::sync::Mutex::new(()),
            room: Notify::new(),
        }
    }

    /// Room was made, or the queue closed: the waiting pusher tries again.
    pub(crate) fn notify(&self) {
        self.room.notify_waiters();
    }

    /// Calls `try_put` until it takes `data` (`Ok(Ok(_))`) or refuses it for good
    /// (`Err`); while it hands `data` back (`Ok(Err(data))`, no room), waits for room.
    /// After `timeout` the answer is `Refusal::Backpressure`.
    pub(crate) async fn push<D, T>(
        &self,
        sink: &str,
        timeout: Duration,
        data: D,
        mut try_put: impl FnMut(D) -> Result<Result<T, D>, Refusal>,
    ) -> Result<T, Refusal> {
        let deadline = Instant::now() + timeout;
        let backpressure = || Refusal::Backpressure {
            sink: sink.to_string(),
            retry_after: RETRY_AFTER,
        };
        // Take a place in line; with nobody waiting this does not suspend.
        let _turn = match self.line.try_lock() {
            Ok(turn) => turn,
            Err(_) => tokio::time::timeout_at(deadline, self.line.lock())
                .await
                .map_err(|_| backpressure())?,
        };
        let mut data = data;
        loop {
            // Register for the wake-up before checking, so room made between the check
            // and the wait is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match try_put(data)? {
                Ok(taken) => return Ok(taken),
                Err(back) => data = back,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(backpressure());
            }
        }
    }
}
