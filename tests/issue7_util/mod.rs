//! Helpers shared by the issue-7 test binaries (`bad_input.rs`, `stress.rs`,
//! `stress_memory.rs`): drop-counting guards and a probe for "was this future ever polled".
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts guards made and guards dropped.
#[derive(Clone, Default, Debug)]
pub struct Drops {
    made: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    polled: Arc<AtomicUsize>,
}

impl Drops {
    pub fn new() -> Drops {
        Drops::default()
    }

    /// A value that counts itself as dropped when it is.
    pub fn guard(&self) -> Guard {
        self.made.fetch_add(1, Ordering::SeqCst);
        Guard(self.clone())
    }

    /// Marks that a future holding a guard was polled (call it first thing in the future).
    pub fn polled(&self) {
        self.polled.fetch_add(1, Ordering::SeqCst);
    }

    pub fn made(&self) -> usize {
        self.made.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    pub fn polls(&self) -> usize {
        self.polled.load(Ordering::SeqCst)
    }

    /// Every guard made was dropped exactly once (a guard is dropped at most once by
    /// construction, so equal counts mean "each once").
    #[track_caller]
    pub fn assert_all_dropped(&self) {
        assert_eq!(self.dropped(), self.made(), "guards dropped vs made");
    }
}

#[derive(Debug)]
pub struct Guard(Drops);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// A guard whose drop panics with `msg` (for "a child that panics while being dropped").
#[derive(Debug)]
pub struct PanicOnDrop(pub &'static str, pub Guard);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("{}", self.0);
        }
    }
}

/// The message of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".into()
    }
}
