//! The in-tree fuzzing driver (tests only), shared by the harnesses that sit
//! beside the parsers they fuzz (`mod fuzz_tests` in each module).
//!
//! Engine: proptest's generators on the stable toolchain (no nightly, so no
//! libFuzzer). A harness describes its inputs as a proptest [`Strategy`],
//! usually a *structure-aware* mutation of a seed (a real test image, a
//! config file): fields of the format overwritten with boundary values,
//! lengths and offsets pointed past the end, bytes flipped. [`run`] draws
//! inputs until the harness's time budget or case count is spent and hands
//! each to the check, which must return (an `Err` from the parser is fine:
//! bad input is expected) without panicking, aborting or hanging.
//!
//! What a failure leaves: before each case the input is written to
//! `$RFAKE_FUZZ_DIR/<harness>.last` (default: the system temp dir), so an
//! abort (an allocation the test allocator refuses, a stack overflow) still
//! leaves the input behind; a panic also saves it as
//! `<harness>-crash-<n>.bin` and the test fails naming that file. Every
//! crasher becomes a regression test beside the harness.
//!
//! Budget: `RFAKE_FUZZ_SECONDS` per harness (default 2; CI sets it, see
//! `tests/run.sh`), at most `RFAKE_FUZZ_CASES` cases (default unbounded).
//! The seed of the random source is printed, and `RFAKE_FUZZ_SEED` replays
//! one run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The unit tests' allocator: the system one, refusing any single
/// allocation over [`ALLOCATION_CAP`]. An allocation sized by untrusted
/// bytes then fails loudly (an abort naming the size) instead of passing
/// because the kernel overcommits lazily.
struct CappedAlloc;

/// Larger than anything a test needs, far smaller than what a corrupted
/// length field asks for.
pub const ALLOCATION_CAP: usize = 1 << 30;

// SAFETY: every call is forwarded unchanged to the system allocator, except
// oversized requests, which return null as an allocator may.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn out_dir() -> PathBuf {
    std::env::var_os("RFAKE_FUZZ_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// Draw inputs from `strategy` and run `check` on each, within the budget.
/// `check` gets the input; it must not panic. `save` turns an input into the
/// bytes kept for a crasher.
pub fn run<S, F>(harness: &str, strategy: S, save: impl Fn(&S::Value) -> Vec<u8>, check: F)
where
    S: Strategy,
    F: Fn(&S::Value),
{
    let budget = Duration::from_secs(env_number("RFAKE_FUZZ_SECONDS").unwrap_or(2));
    let max_cases = env_number("RFAKE_FUZZ_CASES").unwrap_or(u64::MAX);
    let seed = env_number("RFAKE_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let dir = out_dir();
    let _ = std::fs::create_dir_all(&dir);
    let last = dir.join(format!("{harness}.last"));
    let start = Instant::now();
    let mut cases = 0u64;
    while cases < max_cases && start.elapsed() < budget {
        let tree = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("fuzz {harness}: the generator failed: {e}"));
        let input = tree.current();
        let bytes = save(&input);
        let _ = std::fs::write(&last, &bytes);
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            let kept = dir.join(format!("{harness}-crash-{cases}.bin"));
            let _ = std::fs::write(&kept, &bytes);
            panic!(
                "fuzz {harness}: case {cases} panicked (RFAKE_FUZZ_SEED={seed}); input saved as {}",
                kept.display()
            );
        }
        cases += 1;
    }
    let _ = std::fs::remove_file(&last);
    eprintln!(
        "fuzz {harness}: {cases} cases in {:.1} s, no failure (RFAKE_FUZZ_SEED={seed})",
        start.elapsed().as_secs_f64()
    );
    assert!(cases > 0, "fuzz {harness}: ran no case");
}

/// Byte-level mutations of `seed`: between 1 and `max_edits` edits, each
/// overwriting a little-endian field of 1, 2, 4 or 8 bytes at an offset
/// (one of `hot` offsets, where the format keeps lengths, counts and
/// offsets, or anywhere) with a boundary value or random bits.
pub fn mutations(
    seed: Vec<u8>,
    hot: Vec<usize>,
    max_edits: usize,
) -> impl Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let len = seed.len().max(1);
    let at = if hot.is_empty() {
        (0..len).boxed()
    } else {
        prop_oneof![1 => 0..len, 2 => proptest::sample::select(hot)].boxed()
    };
    let value = prop_oneof![
        proptest::sample::select(vec![
            0u64,
            1,
            0x7f,
            0xff,
            0xffff,
            0x7fff_ffff,
            0xffff_ffff,
            u64::MAX,
            u64::MAX / 2,
            len as u64,
            len as u64 - 1,
            len as u64 + 1,
        ]),
        any::<u64>(),
    ];
    let width = proptest::sample::select(vec![1usize, 2, 4, 8]);
    let edit = (at, width, value);
    proptest::collection::vec(edit, 1..=max_edits.max(1)).prop_map(move |edits| {
        let mut out = seed.clone();
        for (at, width, value) in edits {
            let bytes = value.to_le_bytes();
            for (i, byte) in bytes.iter().take(width).enumerate() {
                if let Some(b) = out.get_mut(at + i) {
                    *b = *byte;
                }
            }
        }
        out
    })
}

/// A seed file for the harnesses: the test images built by
/// `images/build-images.sh` (`$RFAKE_TEST_IMAGES`) or the shared SIF data
/// (`$RFAKE_TEST_SIF_DIR`). Missing data fails under `CI=true` and skips the
/// seed otherwise.
pub fn seed_file(env: &str, default_dir: &str, name: &str) -> Option<Vec<u8>> {
    let path = crate::testing::data_dir(env, default_dir)?.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            crate::testing::missing(&format!("fuzz seed {}: {e}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_change_the_seed_and_keep_its_length() {
        let mut runner = TestRunner::deterministic();
        let strategy = mutations(vec![0u8; 64], vec![8, 16], 3);
        let mut changed = 0;
        for _ in 0..100 {
            let v = strategy.new_tree(&mut runner).unwrap().current();
            assert_eq!(v.len(), 64);
            if v.iter().any(|&b| b != 0) {
                changed += 1;
            }
        }
        assert!(
            changed > 50,
            "only {changed} of 100 mutations changed a byte"
        );
    }

    #[test]
    #[should_panic(expected = "panicked")]
    fn a_panicking_check_fails_and_saves_the_input() {
        run(
            "selftest",
            mutations(vec![1, 2, 3], vec![], 1),
            |v| v.clone(),
            |_| panic!("boom"),
        );
    }
}
