//! A small deterministic mutator for the smoke tests: the committed seed corpus of a target
//! (`fuzz/seeds/<target>/`, which libFuzzer starts from too) as it is, then the seeds with a
//! few random edits each (bit flips, overwritten, inserted, deleted, duplicated and
//! truncated bytes, splices of two seeds). A fixed seed keeps a failure reproducible; the
//! fuzz targets explore far further than this.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Calls `check` with every file of `fuzz/seeds/<target>/` and then with `rounds` mutated
/// copies. Inputs that once broke a property are kept in the corpus, so this is also their
/// regression test.
pub fn for_each_mutation(target: &str, rounds: usize, seed: u64, mut check: impl FnMut(&[u8])) {
    let seeds = seed_corpus(target);
    let seeds = &seeds[..];
    for input in seeds {
        check(input);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..rounds {
        let mut input = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate_once(&mut input, seeds, &mut rng);
        }
        check(&input);
    }
}

fn seed_corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("seed corpus {}: {error}", dir.display()))
        .map(|entry| entry.expect("seed corpus entry").path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths
        .iter()
        .map(|path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect();
    assert!(!seeds.is_empty(), "seed corpus {} is empty", dir.display());
    seeds
}

fn mutate_once(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut StdRng) {
    if input.is_empty() {
        input.push(rng.random());
        return;
    }
    let at = rng.random_range(0..input.len());
    match rng.random_range(0..7) {
        0 => input[at] ^= 1 << rng.random_range(0..8),
        1 => input[at] = rng.random(),
        2 => {
            let n = rng.random_range(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            input.splice(at..at, bytes);
        }
        3 => {
            let end = (at + rng.random_range(1..=16)).min(input.len());
            input.drain(at..end);
        }
        4 => {
            let end = (at + rng.random_range(1..=32)).min(input.len());
            let copy = input[at..end].to_vec();
            let to = rng.random_range(0..=input.len());
            input.splice(to..to, copy);
        }
        5 => input.truncate(at),
        _ => {
            let other = &seeds[rng.random_range(0..seeds.len())];
            if !other.is_empty() {
                let from = rng.random_range(0..other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
}
