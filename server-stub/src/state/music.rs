//! Wiring of the music service ([`crate::music`]) to the registry: members are read under a
//! brief registry lock, the room's work runs under the room's lock only, and its deliveries
//! are pushed while that room lock is still held (see [`super`] for the lock order).

use super::{AppState, RegistryGuard};
use crate::music::Output;
use crate::registry::error_msg;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use serde_json::Value;

impl AppState {
    /// A music message (`music-control`, a client's `sync-state`, `music-changes`) from
    /// `sid`'s socket `conn_id`, Sync-lane frame `seq`; see [`crate::music`]. The lane grant
    /// was checked by the caller. Refusals go to the sender as a Control `error` (lane 7, `seq`).
    pub(crate) fn music_message(&self, sid: SessionId, conn_id: u64, seq: u64, value: Value) {
        let (room, members) = {
            let reg = self.registry();
            let Some(room) = reg.room_of(sid) else {
                drop(reg);
                return self.deliver_music(
                    Some((sid, conn_id, seq)),
                    Output {
                        deliveries: Vec::new(),
                        refusal: Some(p3_lanes::core::error::WireError::new(
                            p3_lanes::core::error::ErrorCode::NotInRoom,
                            "join a music room before sending music-control",
                        )),
                    },
                );
            };
            let members = reg.room_members_identified(&room);
            (room, members)
        };
        self.music.handle(&room, &members, sid, value, |out| {
            self.deliver_music(Some((sid, conn_id, seq)), out);
        });
    }

    /// Control `ping` from `sid`'s socket `conn_id` (a WebSocket, or the SSE/HTTP sender):
    /// answers the `pong` under `reg`, then, with the registry released, feeds `rtt_ms` to
    /// [`AppState::music_rtt`].
    pub(crate) fn answer_ping(
        &self,
        mut reg: RegistryGuard<'_>,
        sid: SessionId,
        conn_id: u64,
        client_time: f64,
        rtt_ms: Option<f64>,
    ) {
        reg.answer_ping(sid, conn_id, client_time);
        drop(reg);
        if let Some(rtt) = rtt_ms {
            self.music_rtt(sid, rtt);
        }
    }

    /// `ping {rttMs}` from `sid`: feeds its room's authority, if it is in a music room.
    pub(crate) fn music_rtt(&self, sid: SessionId, rtt_ms: f64) {
        let room = self.registry().room_of(sid);
        if let Some(room) = room {
            self.music.rtt(&room, sid, rtt_ms);
        }
    }

    /// Pushes a music output: its deliveries, and its refusal to `sender` (session, socket,
    /// frame seq).
    pub(super) fn deliver_music(&self, sender: Option<(SessionId, u64, u64)>, out: Output) {
        self.deliver_server(&out.deliveries);
        if let (Some((sid, conn_id, seq)), Some(e)) = (sender, out.refusal) {
            let msg = error_msg(e.code, e.error, Some(Lane::Sync.id()), Some(seq));
            self.registry().reply(sid, conn_id, &msg);
        }
    }
}
