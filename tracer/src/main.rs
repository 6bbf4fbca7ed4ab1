// Wired up by the tracer and the `topology` subcommand once they land.
#[allow(dead_code)]
mod enrich;

fn main(){}
