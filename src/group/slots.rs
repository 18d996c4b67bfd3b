//! The count of a group's running normal tasks, taken and given back without the group's lock.
//!
//! A spawner takes a slot and a task gives it back on every spawn. Under the group's lock,
//! both contended with each other and with every other task ending on another worker: on a
//! multi-thread runtime the lock's cache line made most of what a limited fan-out cost over
//! `buffer_unordered`. Here the count is one atomic word, with two flags beside it:
//!
//! - `CLOSED`: no slot is taken from here on but under the group's lock (which decides then);
//! - `BACKLOG`: tasks are queued or producers wait for a slot, so a newcomer must not take one
//!   before them, and a task that gives its slot back must hand it on, under the lock.
//!
//! The fast paths ([`Slots::try_take`], and [`Slots::give_back_or_hold`] when it reports
//! nothing to do) take no lock. Everything else changes the word under the group's lock,
//! which keeps the queue and the waiter consistent with it (see `Shared`):
//!
//! - a slow path sets `BACKLOG` *before* it reads the count to decide ([`Slots::hold`]): a task
//!   that ends after that sees the flag, keeps its slot and takes the lock to hand it on; one
//!   that gave its slot back before is in the count read;
//! - giving back the last slot always takes the lock, to wake the group (it may complete).

use crate::loom::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire};

const CLOSED: usize = 1 << (usize::BITS - 1);
const BACKLOG: usize = 1 << (usize::BITS - 2);
const COUNT: usize = BACKLOG - 1;

pub(crate) struct Slots {
    word: AtomicUsize,
    /// The concurrency limit; [`COUNT`] when there is none.
    limit: usize,
}

/// What giving a slot back left to do under the group's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GaveBack {
    /// Nothing: other tasks still run (this many slots are still taken) and nobody waits
    /// for a slot.
    Quietly(usize),
    /// Wake the group: it was the last running task.
    Locked,
    /// Kept, not given back: tasks are queued or producers wait, and the slot goes straight
    /// to the first of them, under the group's lock.
    Held,
}

impl Slots {
    pub(crate) fn new(limit: Option<usize>) -> Slots {
        Slots {
            word: AtomicUsize::new(0),
            limit: limit.unwrap_or(COUNT).min(COUNT),
        }
    }

    /// Takes a slot if one is free, the group is open, and nobody waits before the caller.
    /// No lock: `false` sends the caller to the slow path, under the group's lock.
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        let mut word = self.word.load(Acquire);
        loop {
            if word & (CLOSED | BACKLOG) != 0 || word & COUNT >= self.limit {
                return false;
            }
            match self
                .word
                .compare_exchange_weak(word, word + 1, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// Takes a slot whatever the count and flags. Under the group's lock, which decided.
    pub(crate) fn take_locked(&self) {
        self.word.fetch_add(1, AcqRel);
    }

    /// Gives a slot back, unless somebody waits for one: then the caller keeps it, to hand it
    /// on under the group's lock ([`GaveBack::Held`]) without giving it back and taking it
    /// again (two writes of this word, which the spawners and the ending tasks share).
    #[inline]
    pub(crate) fn give_back_or_hold(&self) -> GaveBack {
        if self.limit == COUNT {
            // No limit: nobody ever waits for a slot; one `fetch_sub`, no retry.
            return self.give_back();
        }
        let mut word = self.word.load(Acquire);
        loop {
            if word & BACKLOG != 0 {
                return GaveBack::Held;
            }
            debug_assert!(word & COUNT > 0, "a slot given back that was never taken");
            match self
                .word
                .compare_exchange_weak(word, word - 1, AcqRel, Acquire)
            {
                Ok(_) if word & COUNT == 1 => return GaveBack::Locked,
                Ok(_) => return GaveBack::Quietly((word & COUNT) - 1),
                Err(now) => word = now,
            }
        }
    }

    /// Gives a slot back; tells whether the group's lock must be taken for what follows
    /// ([`GaveBack::Locked`] also when somebody waits for a slot: it is handed on from there).
    #[inline]
    pub(crate) fn give_back(&self) -> GaveBack {
        let before = self.word.fetch_sub(1, AcqRel);
        debug_assert!(before & COUNT > 0, "a slot given back that was never taken");
        if before & BACKLOG != 0 || before & COUNT == 1 {
            GaveBack::Locked
        } else {
            GaveBack::Quietly((before & COUNT) - 1)
        }
    }

    /// Stops fast-path takers (sets `BACKLOG`) and returns the count, for a slow path to
    /// decide on under the group's lock. The caller settles the flag with
    /// [`set_backlog`](Self::set_backlog) once it decided.
    pub(crate) fn hold(&self) -> usize {
        self.word.fetch_or(BACKLOG, AcqRel) & COUNT
    }

    /// Sets or clears `BACKLOG`: whether tasks are queued or producers wait. Under the lock.
    pub(crate) fn set_backlog(&self, backlog: bool) {
        if backlog {
            self.word.fetch_or(BACKLOG, AcqRel);
        } else {
            self.word.fetch_and(!BACKLOG, AcqRel);
        }
    }

    /// Closes the fast path for good. Under the lock.
    pub(crate) fn close(&self) {
        self.word.fetch_or(CLOSED, AcqRel);
    }

    /// Closes the fast path if no slot is taken; tells whether it did. Under the lock: the
    /// group completes only if no spawner took a slot without it meanwhile.
    pub(crate) fn close_if_empty(&self) -> bool {
        let mut word = self.word.load(Acquire);
        loop {
            if word & COUNT != 0 {
                return false;
            }
            match self
                .word
                .compare_exchange_weak(word, word | CLOSED, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// The slots taken: normal tasks running, reserved, or held by a cancelled blocking
    /// task's thread.
    pub(crate) fn taken(&self) -> usize {
        self.word.load(Acquire) & COUNT
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = self.word.load(Acquire);
        f.debug_struct("Slots")
            .field("taken", &(word & COUNT))
            .field("closed", &(word & CLOSED != 0))
            .field("backlog", &(word & BACKLOG != 0))
            .finish()
    }
}

/// Model checks of the lock-free slot hand-over under `loom` (see `src/loom.rs`).
#[cfg(all(test, quattro_loom))]
mod loom_tests {
    use super::{GaveBack, Slots};
    use crate::loom::Mutex;
    use loom::sync::Arc;

    /// Two slots, both taken (the slot given back is not the last one: giving back the last
    /// always takes the lock); `ender` ends one task on another thread while a spawner's slow
    /// path, under the queue's lock (standing in for the group's), decides whether its task
    /// must queue. Afterwards no task may wait while a slot is free.
    fn race_a_queueing_spawner(ender: fn(&Slots, &Mutex<usize>)) {
        loom::model(move || {
            let slots = Arc::new(Slots::new(Some(2)));
            assert!(slots.try_take() && slots.try_take(), "both slots are free");
            // The queue, under the group's lock: how many tasks wait.
            let queue = Arc::new(Mutex::new(0usize));
            let (s, q) = (slots.clone(), queue.clone());
            let ending = loom::thread::spawn(move || ender(&s, &q));
            {
                let mut queued = queue.lock().unwrap();
                if slots.hold() + *queued >= slots.limit() {
                    *queued += 1;
                } else {
                    slots.take_locked();
                    slots.set_backlog(*queued > 0);
                }
            }
            ending.join().unwrap();
            let queued = *queue.lock().unwrap();
            assert_eq!(
                queued, 0,
                "the task waits in the queue while a slot is free"
            );
            assert_eq!(slots.taken(), 2, "the task runs in the freed slot");
        });
    }

    /// A slot given back while a spawner queues its task (the group is full) is never lost:
    /// either the spawner sees the count drop and takes the slot itself, or the task that
    /// gave it back sees the backlog and hands it on under the lock.
    #[test]
    fn a_slot_freed_while_a_task_queues_is_handed_on() {
        race_a_queueing_spawner(|slots, queue| {
            if slots.give_back() == GaveBack::Locked {
                let mut queued = queue.lock().unwrap();
                // Hand on: start a queued task in the freed slot.
                if *queued > 0 && slots.taken() < slots.limit() {
                    *queued -= 1;
                    slots.take_locked();
                    slots.set_backlog(*queued > 0);
                }
            }
        });
    }

    /// The same race when the task keeps its slot for the queued one: either it gives the
    /// slot back before the spawner looks (the spawner takes it), or it sees the backlog and
    /// hands its slot on under the lock, never both, never neither.
    #[test]
    fn a_held_slot_goes_to_the_task_that_queued() {
        race_a_queueing_spawner(|slots, queue| match slots.give_back_or_hold() {
            GaveBack::Held => {
                let mut queued = queue.lock().unwrap();
                if *queued > 0 {
                    // The slot goes on as it is: no count change.
                    *queued -= 1;
                } else {
                    slots.give_back();
                }
                slots.set_backlog(*queued > 0);
            }
            GaveBack::Locked => unreachable!("another slot is still taken"),
            GaveBack::Quietly(_) => {}
        });
    }

    /// A group completes only when no slot is taken, and a spawner that raced the completion
    /// either took its slot first (the group does not complete) or finds it closed.
    #[test]
    fn a_group_never_completes_under_a_running_task() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(None));
            let s = slots.clone();
            let spawner = loom::thread::spawn(move || s.try_take());
            let completed = slots.close_if_empty();
            let spawned = spawner.join().unwrap();
            assert!(
                !(completed && spawned),
                "a task spawned into a group that completed"
            );
            assert!(completed || spawned);
        });
    }
}
