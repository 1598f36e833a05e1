use dstream_sdk as dstream;

struct Counter;

impl Counter {
    // An operator is a free function.
    #[dstream::map]
    fn len(&self, line: &str) -> u64 {
        line.len() as u64
    }
}

fn main() {}
