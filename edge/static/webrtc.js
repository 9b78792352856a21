// camflow WebRTC playback (WHEP): window.camflowWebRTC(video, url) makes a viewer of one stream whose
// start() POSTs a recvonly offer (video and audio) to url (/whep/{stream}?token=...), puts the answer's
// tracks on the video element and resolves once a frame plays (rejects with the server's JSON error,
// or when no frame came within START_MS); stop() DELETEs the session. While it plays, check() (called
// by the player 4 times a second) reads the receiver's statistics: the latency behind ingest (now minus
// the sender's NTP time of the frame on screen, estimatedPlayoutTimestamp, so it needs synchronised
// clocks) where the browser reports it, else the delay it adds itself (half the round trip, the jitter
// buffer and decoding: ``delay``), and whether frames still arrive; onfail(reason) is called when the connection fails or no
// frame was decoded for STALL_MS (the ingest node went away), so the player falls back to HLS.
(function () {
  "use strict";
  const START_MS = 5000;
  const STALL_MS = 4000;
  const NTP_TO_UNIX_MS = 2208988800000;

  window.camflowWebRTC = function (video, url) {
    let pc = null;
    let session = null;
    let lastFrames = 0;
    let lastProgress = 0;
    const viewer = { onfail: null, latency: null, delay: null, frames: 0, error: null };

    function gathered(peer) {
      return new Promise(function (done) {
        if (peer.iceGatheringState === "complete") return done();
        peer.addEventListener("icegatheringstatechange", function () {
          if (peer.iceGatheringState === "complete") done();
        });
        setTimeout(done, 2000);
      });
    }
    function fail(reason) {
      if (!pc) return;
      viewer.error = reason;
      viewer.stop();
      if (viewer.onfail) viewer.onfail(reason);
    }

    viewer.start = async function () {
      viewer.stop();
      viewer.error = null;
      viewer.latency = null;
      viewer.delay = null;
      lastProgress = Date.now();
      const peer = new RTCPeerConnection();
      pc = peer;
      peer.addTransceiver("video", { direction: "recvonly" });
      peer.addTransceiver("audio", { direction: "recvonly" });
      const media = new MediaStream();
      peer.ontrack = function (e) { media.addTrack(e.track); };
      peer.onconnectionstatechange = function () {
        if (pc === peer && peer.connectionState === "failed") fail("the WebRTC connection failed");
      };
      await peer.setLocalDescription(await peer.createOffer());
      await gathered(peer);
      const res = await fetch(url, {
        method: "POST", body: peer.localDescription.sdp, headers: { "Content-Type": "application/sdp" },
      });
      const text = await res.text();
      if (res.status !== 201) {
        let reason = "HTTP " + res.status;
        try { const body = JSON.parse(text); reason = body.error + ": " + body.detail; } catch (_e) { /* not JSON */ }
        throw new Error(reason);
      }
      session = new URL(res.headers.get("Location"), res.url);  // res.url: where a 307 sent the offer
      if (pc !== peer) throw new Error("stopped");
      await peer.setRemoteDescription({ type: "answer", sdp: text });
      video.srcObject = media;
      await new Promise(function (done, reject) {
        const timer = setTimeout(function () { reject(new Error("no video within " + START_MS / 1000 + " s")); }, START_MS);
        video.addEventListener("playing", function () { clearTimeout(timer); done(); }, { once: true });
        video.play().catch(function () { /* autoplay: muted, so it plays */ });
      });
      lastFrames = 0;
      lastProgress = Date.now();
    };

    viewer.stop = function () {
      if (session) fetch(session, { method: "DELETE", keepalive: true }).catch(function () { /* gone */ });
      session = null;
      if (pc) pc.close();
      pc = null;
      if (video.srcObject) video.srcObject = null;
    };

    viewer.check = async function () {
      const peer = pc;
      if (!peer) return;
      const stats = await peer.getStats();
      let rtt = 0;
      let buffered = null;
      stats.forEach(function (s) {
        if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime) rtt = s.currentRoundTripTime;
        if (s.type !== "inbound-rtp" || s.kind !== "video") return;
        viewer.frames = s.framesDecoded || 0;
        if (s.estimatedPlayoutTimestamp) {
          viewer.latency = (Date.now() - (s.estimatedPlayoutTimestamp - NTP_TO_UNIX_MS)) / 1000;
        }
        if (s.jitterBufferEmittedCount && s.framesDecoded) {
          buffered = s.jitterBufferDelay / s.jitterBufferEmittedCount + (s.totalDecodeTime || 0) / s.framesDecoded;
        }
      });
      if (buffered !== null) viewer.delay = rtt / 2 + buffered;
      const now = Date.now();
      if (viewer.frames > lastFrames) {
        lastFrames = viewer.frames;
        lastProgress = now;
      } else if (pc === peer && now - lastProgress > STALL_MS) {
        fail("no video for " + STALL_MS / 1000 + " s");
      }
    };
    return viewer;
  };
})();
