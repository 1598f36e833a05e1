use dstream_sdk as dstream;

// The host must know the types: no type parameters.
#[dstream::reduce]
fn sum<T: std::ops::Add<Output = T>>(a: T, b: T) -> T {
    a + b
}

fn main() {}
