//! Draws that run by themselves: every process watches the list of draws not yet run and runs
//! each once it is due, so that a draw campaign's winners are chosen at `opensAt` whether or not
//! anyone applies then. Several processes share a draw's work safely (see `Gate::draw`), and a
//! draw cut short by a crash goes on at the next look.
//!
//! Metrics: `coupon_queue_size{campaign}` (users in a pre-queue, 0 once drawn). The gate records
//! `coupon_draw_duration_seconds` in the call that ends a draw, here or in an application.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use coupon_gate::{CampaignId, Draw, Gate, RedisConnection};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::state::AppState;

/// How often the list of draws is read when no draw is due sooner: a new draw campaign is
/// noticed within this, and a queue's gauge is this fresh.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Runs due draws until `stopped` turns true.
pub(crate) async fn run(state: Arc<AppState>, mut stopped: watch::Receiver<bool>) {
    // Campaigns whose queue gauge this process set: a draw that another process ran leaves
    // the list, and its gauge here falls to 0 then.
    let mut gauged = BTreeSet::new();
    loop {
        let pause = match state.gate() {
            Ok(gate) => look(gate, &mut gauged).await,
            Err(_) => LOOK_EVERY,
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Runs every draw that is due, sets the queues' gauges, and answers how long to wait before
/// the next look.
async fn look(gate: &Gate<RedisConnection>, gauged: &mut BTreeSet<CampaignId>) -> Duration {
    let pending = match gate.pending_draws().await {
        Ok(pending) => pending,
        Err(err) => {
            warn!(cause = %err, "cannot read the draws to run");
            return LOOK_EVERY;
        }
    };
    gauged.retain(|campaign| {
        let listed = pending.iter().any(|(c, _)| c == campaign);
        if !listed {
            queue_gauge(campaign).set(0.0);
        }
        listed
    });
    let mut pause = LOOK_EVERY;
    for (campaign, due) in pending {
        let due_in = due.duration_since(SystemTime::now()).unwrap_or_default();
        if !due_in.is_zero() {
            set_queue_size(gate, &campaign).await;
            gauged.insert(campaign);
            pause = pause.min(due_in);
            continue;
        }
        match gate.draw(&campaign).await {
            Ok(Draw::Done { winners, took }) => {
                queue_gauge(&campaign).set(0.0);
                if let Some(took) = took {
                    info!(%campaign, winners, ?took, "draw ended");
                }
            }
            // By Redis's clock the draw is not due yet: look again then.
            Ok(Draw::NotDue { due_in }) => pause = pause.min(due_in),
            Ok(Draw::NoDraw | Draw::GoesOn { .. }) => {}
            Err(err) => {
                warn!(%campaign, cause = %err, "draw interrupted; it goes on at the next look")
            }
        }
    }
    // Not below a few milliseconds, so that clocks a little apart cannot make it spin.
    pause.max(Duration::from_millis(5))
}

async fn set_queue_size(gate: &Gate<RedisConnection>, campaign: &CampaignId) {
    if let Ok(Some(status)) = gate.status(campaign).await {
        queue_gauge(campaign).set(status.queued as f64);
    }
}

fn queue_gauge(campaign: &CampaignId) -> metrics::Gauge {
    metrics::gauge!("coupon_queue_size", "campaign" => campaign.as_str().to_owned())
}
