//! Compile tests of the attributes and of `#[derive(Params)]`: valid
//! signatures compile (`ui/pass`), and each bad one is a compile error that
//! points at the mistake (`ui/fail`, with the expected errors in `.stderr`).
//!
//! After changing a message, regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p dstream-sdk --test ui` and read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
