//! Building this crate needs `bpf-linker` on PATH, which cargo cannot express
//! as a dependency; rebuild when it changes.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo::rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo::warning=bpf-linker not found ({err}); run ./x setup"),
    }
}
