//! Rebuilds the crate when a migration file changes: `sqlx::migrate!` compiles the files
//! in, and cargo does not otherwise know to look at them.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
