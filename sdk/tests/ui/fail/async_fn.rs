use dstream_sdk as dstream;

// Operators run synchronously.
#[dstream::map]
async fn fetch(url: &str) -> String {
    url.to_string()
}

fn main() {}
