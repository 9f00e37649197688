//! A commit strategy on a thread of its own: the pipeline thread hands it
//! commands in order and goes on processing while records are queued and
//! delivery reports awaited.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

use super::{CommitStrategy, Pending};
use crate::process::Cycle;

/// What the pipeline asks of a [`Background`] strategy.
enum Command {
    Commit(Box<Cycle>),
    Settle,
    Forget(u32),
}

/// How often a settle waiting for the background thread calls its keep-alive.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(100);

/// How often the background thread lets its strategy advance while deliveries are awaited.
const BACKGROUND_CHECK_EVERY: Duration = Duration::from_millis(5);

/// Cycles handed to the background thread and not yet taken: beyond this
/// `commit` waits, which holds the pipeline back when writing falls behind.
const BACKGROUND_QUEUE: usize = 16;

/// A commit strategy run on a thread of its own, fed in order by the pipeline
/// thread. Its first error stops it and is returned by the next call.
pub struct Background {
    commands: Option<SyncSender<Command>>,
    settled: Receiver<anyhow::Result<()>>,
    failure: Arc<Mutex<Option<anyhow::Error>>>,
    /// Set once an error was returned: the thread stops, if not yet stopped.
    stopped: bool,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts `strategy` on a thread named `cxpulse-commit`.
    pub fn start(mut strategy: impl CommitStrategy + Send + 'static) -> anyhow::Result<Self> {
        let (commands, received) = mpsc::sync_channel::<Command>(BACKGROUND_QUEUE);
        let (settle_reply, settled) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let thread = std::thread::Builder::new()
            .name("cxpulse-commit".into())
            .spawn(move || loop {
                // Slices of a flush go out back to back while no cycle comes
                // (a command is still taken between two slices); deliveries
                // are checked for every few milliseconds; an idle thread
                // sleeps until the next command.
                let command = match strategy.pending() {
                    Pending::Records => match received.try_recv() {
                        Err(TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
                        Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                        Ok(command) => Ok(command),
                    },
                    Pending::Deliveries => received.recv_timeout(BACKGROUND_CHECK_EVERY),
                    Pending::Nothing => received.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                let result = match command {
                    Ok(Command::Commit(cycle)) => strategy.commit(*cycle),
                    Ok(Command::Settle) => {
                        let result = strategy.settle();
                        let failed = result.is_err();
                        let _ = settle_reply.send(result);
                        if failed {
                            return;
                        }
                        Ok(())
                    }
                    Ok(Command::Forget(task)) => {
                        strategy.forget(task);
                        Ok(())
                    }
                    Err(RecvTimeoutError::Timeout) => strategy.check(),
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                if let Err(error) = result {
                    *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    return;
                }
            })
            .context("starting the commit thread")?;
        Ok(Background {
            commands: Some(commands),
            settled,
            failure,
            stopped: false,
            thread: Some(thread),
        })
    }

    /// Fails once the background thread stopped: with its error the first time.
    fn failure(&mut self) -> anyhow::Result<()> {
        let error = self
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(error) = error {
            // The thread may still be on its way out: remember that it stops.
            self.stopped = true;
            return Err(error);
        }
        if self.stopped || self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
            anyhow::bail!("the commit thread stopped");
        }
        Ok(())
    }

    /// Why the thread no longer answers: its error, if not yet returned.
    fn stopped_error(&mut self) -> anyhow::Error {
        self.failure()
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the commit thread stopped"))
    }

    fn send(&mut self, command: Command) -> anyhow::Result<()> {
        let sent = self
            .commands
            .as_ref()
            .is_some_and(|commands| commands.send(command).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.stopped_error())
        }
    }
}

impl CommitStrategy for Background {
    fn check(&mut self) -> anyhow::Result<()> {
        self.failure()
    }

    fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()> {
        self.failure()?;
        self.send(Command::Commit(Box::new(cycle)))
    }

    fn settle(&mut self) -> anyhow::Result<()> {
        self.settle_keeping_alive(&mut || {})
    }

    fn settle_keeping_alive(&mut self, keep_alive: &mut dyn FnMut()) -> anyhow::Result<()> {
        self.send(Command::Settle)?;
        loop {
            match self.settled.recv_timeout(KEEP_ALIVE_EVERY) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Timeout) => keep_alive(),
                Err(RecvTimeoutError::Disconnected) => return Err(self.stopped_error()),
            }
        }
    }

    fn forget(&mut self, task: u32) {
        // A stopped thread forgets nothing; its error comes with the next call.
        let _ = self.send(Command::Forget(task));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has done what was queued.
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a strategy was asked, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Commit(u64),
        Settle,
        Forget(u32),
    }

    /// Records calls; fails the commit of a cycle whose `applied` is `fail_at`.
    struct Recording {
        calls: Arc<Mutex<Vec<Call>>>,
        fail_at: Option<u64>,
        slow: Duration,
    }

    impl CommitStrategy for Recording {
        fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()> {
            std::thread::sleep(self.slow);
            self.calls.lock().unwrap().push(Call::Commit(cycle.applied));
            if Some(cycle.applied) == self.fail_at {
                anyhow::bail!("cycle {} failed", cycle.applied);
            }
            Ok(())
        }
        fn settle(&mut self) -> anyhow::Result<()> {
            self.calls.lock().unwrap().push(Call::Settle);
            Ok(())
        }
        fn forget(&mut self, task: u32) {
            self.calls.lock().unwrap().push(Call::Forget(task));
        }
    }

    fn cycle(applied: u64) -> Cycle {
        Cycle {
            applied,
            ..Cycle::default()
        }
    }

    fn background(fail_at: Option<u64>, slow: Duration) -> (Background, Arc<Mutex<Vec<Call>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let strategy = Recording {
            calls: calls.clone(),
            fail_at,
            slow,
        };
        (Background::start(strategy).unwrap(), calls)
    }

    #[test]
    fn background_keeps_the_order_and_settle_waits_for_everything_before_it() {
        let (mut background, calls) = background(None, Duration::from_millis(2));
        for applied in 1..=30 {
            background.commit(cycle(applied)).unwrap();
        }
        background.forget(7);
        background.settle().unwrap();
        // Everything handed over before settle was done when it returned.
        let mut expected: Vec<Call> = (1..=30).map(Call::Commit).collect();
        expected.extend([Call::Forget(7), Call::Settle]);
        assert_eq!(*calls.lock().unwrap(), expected);
        drop(background);
    }

    #[test]
    fn background_failure_stops_it_and_is_returned_by_the_next_call() {
        let (mut background, calls) = background(Some(2), Duration::ZERO);
        background.commit(cycle(1)).unwrap();
        background.commit(cycle(2)).unwrap();
        let error = background.settle().unwrap_err();
        assert!(error.to_string().contains("cycle 2 failed"), "{error:#}");
        // Stopped: nothing after the failure reaches the strategy.
        assert!(background.commit(cycle(3)).is_err());
        assert!(background.check().is_err());
        assert_eq!(
            *calls.lock().unwrap(),
            vec![Call::Commit(1), Call::Commit(2)]
        );
    }

    #[test]
    fn background_drop_finishes_what_was_handed_over() {
        let (mut background, calls) = background(None, Duration::from_millis(5));
        for applied in 1..=5 {
            background.commit(cycle(applied)).unwrap();
        }
        drop(background);
        assert_eq!(calls.lock().unwrap().len(), 5);
    }
}
