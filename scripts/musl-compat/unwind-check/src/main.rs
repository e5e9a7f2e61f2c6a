//! Panics a few frames deep, catches it and captures a backtrace: both need the unwinder to find
//! each frame's unwind table (through `_dl_find_object`). Prints one line for build-native.cjs.

fn deep(n: u32) -> u32 {
    if n == 0 {
        panic!("unwind-check: expected panic");
    }
    deep(n - 1) + 1
}

fn main() {
    std::panic::set_hook(Box::new(|_| {}));
    let depth = std::env::args().count() as u32 + 4;
    let caught = std::panic::catch_unwind(|| deep(depth)).is_err();
    let frames = std::backtrace::Backtrace::force_capture()
        .to_string()
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    println!("caught {caught}, backtrace frames {frames}");
    std::process::exit(if caught && frames > 0 { 0 } else { 1 });
}
