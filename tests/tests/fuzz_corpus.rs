//! The fuzz targets (`tests/fuzz/`) on stable Rust: every target runs over its committed corpus
//! (`tests/fuzz/corpus/<target>/`: valid inputs from the real encoders and every input that once
//! crashed a decoder) and over the seeds the encoders make now, so a fixed crash stays fixed and
//! a changed wire format shows here. The fuzzer itself runs from `tests/fuzz/run.sh`, not in CI.
//!
//! `MYCEL_FUZZ_WRITE_SEEDS=1` (re)writes the seeds into the corpus.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::PathBuf,
};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// Runs target `name` on `data`, turning a panic into a message naming the input.
fn survives(name: &str, input: &str, data: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| fuzz::run(name, data)))
        .map_err(|_| format!("fuzz target {name} panicked on {input}"))
}

#[test]
fn every_target_survives_its_committed_corpus() {
    let mut failures = Vec::new();
    for (name, _) in fuzz::TARGETS {
        let dir = corpus_dir().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{} has no corpus: {e}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "the corpus of {name} is empty");
        for file in files {
            let data = std::fs::read(&file).expect("a corpus file");
            if let Err(e) = survives(name, &file.display().to_string(), &data) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_target_survives_the_seeds_the_encoders_make_now() {
    let write = std::env::var_os("MYCEL_FUZZ_WRITE_SEEDS").is_some();
    let mut failures = Vec::new();
    let seeds = fuzz::seeds();
    for (name, _) in fuzz::TARGETS {
        assert!(
            seeds.iter().any(|(target, _, _)| target == name),
            "no seed for fuzz target {name}"
        );
    }
    for (target, seed, data) in seeds {
        if write {
            let dir = corpus_dir().join(target);
            std::fs::create_dir_all(&dir).expect("a corpus dir");
            std::fs::write(dir.join(format!("seed-{seed}")), &data).expect("a seed written");
        }
        if let Err(e) = survives(target, &format!("seed {seed}"), &data) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
