use dstream_sdk as dstream;

// The host calls operators from safe code.
#[dstream::map]
unsafe fn first(line: &[u8]) -> u8 {
    unsafe { *line.get_unchecked(0) }
}

fn main() {}
