//! The request fuzzer against a running appunitd, for `scripts/bench fuzz`:
//! `fuzz SOCKET [REQUESTS] [WORKERS] [SEED]`. Exits 1 at the first bad reply.

#[path = "../tests/fuzzer/mod.rs"]
mod fuzzer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| args.get(i).map_or(Ok(default), |a| a.parse());
    let (Some(socket), Ok(requests), Ok(workers), Ok(seed)) = (
        args.first().map(PathBuf::from),
        number(1, 1_000_000),
        number(2, 4),
        number(3, 0xA99),
    ) else {
        eprintln!("usage: fuzz SOCKET [REQUESTS] [WORKERS] [SEED]");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let outcome = fuzzer::run(&socket, requests as usize, workers, seed);
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => {
            println!("{requests} {seconds:.1}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("fuzz: {problem}");
            ExitCode::FAILURE
        }
    }
}
