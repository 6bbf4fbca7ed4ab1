mod decode;
mod enrich;
mod explain;
mod journey;
mod probes;
mod render;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dest: std::net::Ipv4Addr = std::env::args().nth(1).unwrap().parse()?;
    let filter = probes::Filter { addresses: vec![dest], ..Default::default() };
    let btf = probes::offsets::load_kernel_btf()?;
    let names = decode::KernelNames::from_kernel(&btf)?;
    let mut p = probes::Probes::attach(&filter)?;
    eprintln!("attached");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(6);
    while let Ok(Ok(events)) = tokio::time::timeout_at(deadline, p.next_events()).await {
        for e in events { if let Some(e) = decode::decode(&e, &names) { println!("{}", serde_json::to_string(&e)?); } }
    }
    eprintln!("lost {}", p.lost_events());
    Ok(())
}
