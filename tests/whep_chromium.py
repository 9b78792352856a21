"""Browser as viewer: headless Chromium plays a stream over WHEP from `camflow run`.

    unshare -rn python -m tests.whep_chromium WORKDIR SOURCE SECONDS   # prints one JSON line

SOURCE is ``rtsp`` (ffmpeg pushes RTSP pictures stamped with their wall-clock time,
tests/barcode_camera.py: the page reads the stamp off each frame it shows, which is glass-to-glass
latency) or ``whip`` (the same page first publishes Chromium's fake camera over WHIP, then plays it
back over WHEP). Run inside a private network namespace with only loopback (``unshare -rn``; this
brings ``lo`` up), as tests/whip_chromium.py, so every ICE candidate is 127.0.0.1. The page is served
from another origin than camflow's (the WHEP POST goes through CORS). Every process is stopped by
PID. This module holds no tests (tests/test_whep_chromium.py runs it).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.barcode_camera import HEIGHT, JS_DECODE, WIDTH, BarcodeCamera
from tests.chromium import CHROMIUM_FLAGS, chromium_path
from tests.process import camflow_run, free_port, stop_process

PAGE = (
    """<!doctype html><meta charset="utf-8"><title>WHEP viewer</title><body>
<video id="video" muted playsinline autoplay></video><canvas id="canvas" width="%W" height="%H"></canvas>
<script>%DECODE
const params = new URLSearchParams(location.search);
const report = (what) => fetch('/report', {method: 'POST', body: JSON.stringify(what)});
const sleep = (ms) => new Promise(done => setTimeout(done, ms));
async function gathered(pc) {
  await new Promise(done => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
    setTimeout(done, 5000);
  });
}
async function publish() {  // Chromium's fake camera over WHIP (SOURCE whip)
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: true});
  const pc = new RTCPeerConnection({iceServers: []});
  const t = pc.addTransceiver(media.getVideoTracks()[0], {direction: 'sendonly'});
  pc.addTransceiver(media.getAudioTracks()[0], {direction: 'sendonly'});
  const caps = RTCRtpSender.getCapabilities('video').codecs;
  t.setCodecPreferences(caps.filter(c => c.mimeType.toLowerCase() === 'video/h264'));
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const r = await fetch(params.get('whip'), {method: 'POST', body: pc.localDescription.sdp,
    headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + params.get('publish')}});
  if (r.status !== 201) throw new Error('WHIP POST ' + r.status + ' ' + await r.text());
  await pc.setRemoteDescription({type: 'answer', sdp: await r.text()});
  return pc;
}
(async () => {
  try {
    const publisher = params.get('source') === 'whip' ? await publish() : null;
    const video = document.getElementById('video');
    const ctx = document.getElementById('canvas').getContext('2d', {willReadFrequently: true});
    const pc = new RTCPeerConnection({iceServers: []});
    const states = [];
    pc.onconnectionstatechange = () => states.push(pc.connectionState);
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.addTransceiver('audio', {direction: 'recvonly'});
    const media = new MediaStream();
    video.srcObject = media;
    pc.ontrack = (e) => { media.addTrack(e.track); };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const url = params.get('whep') + '?token=' + params.get('view');  // the token as ?token=
    let r, tries = 0;
    for (;;) {  // 404 until the camera is live
      r = await fetch(url, {method: 'POST', body: pc.localDescription.sdp,
                            headers: {'Content-Type': 'application/sdp'}});
      if (r.status !== 404 || ++tries > 60) break;
      await sleep(500);
    }
    const answer = await r.text();
    if (r.status !== 201) throw new Error('WHEP POST ' + r.status + ' ' + answer);
    const session = new URL(r.headers.get('Location'), url);
    const posted = performance.now();
    await pc.setRemoteDescription({type: 'answer', sdp: answer});
    let firstFrame = null;
    const latencies = [], warmup = Number(params.get('warmup')) * 1000;
    const onFrame = (now) => {
      if (firstFrame === null) firstFrame = now - posted;
      if (params.get('source') === 'rtsp' && now - posted > warmup) {
        ctx.drawImage(video, 0, 0, %W, %H);
        const stamp = readStamp(ctx);
        if (stamp !== null) latencies.push(latencyOf(stamp));
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    await sleep(Number(params.get('seconds')) * 1000);
    let stats = {}, audio = {};
    (await pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'audio') audio = {
      packetsReceived: s.packetsReceived, totalSamplesReceived: s.totalSamplesReceived,
      concealedSamples: s.concealedSamples, totalAudioEnergy: s.totalAudioEnergy}; });
    (await pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') stats = {
      framesDecoded: s.framesDecoded, framesDropped: s.framesDropped, keyFramesDecoded: s.keyFramesDecoded,
      packetsLost: s.packetsLost, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
      jitterBufferDelay: s.jitterBufferDelay, jitterBufferEmittedCount: s.jitterBufferEmittedCount}; });
    const del = await fetch(session, {method: 'DELETE'});
    pc.close();
    if (publisher) publisher.close();
    await report({ok: true, status: r.status, delete: del.status, states, stats, audio, firstFrame, latencies,
                  width: video.videoWidth, height: video.videoHeight, location: r.headers.get('Location')});
  } catch (e) {
    await report({ok: false, error: String(e)});
  }
})();
</script>""".replace("%DECODE", JS_DECODE)
    .replace("%W", str(WIDTH))
    .replace("%H", str(HEIGHT))
)
WARMUP_S = 2.0  # playback before latency samples count


class PageServer:
    """The page above on a free 127.0.0.1 port (another origin than the WHEP server's) and a headless
    Chromium opening it: ``play(query, timeout)`` returns the page's report (stopped by PID)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=4)
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> PageServer:
        async def page(request: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        async def report(request: web.Request) -> web.Response:
            self.reports.put_nowait(json.loads(await request.text()))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_get("/", page)
        app.router.add_post("/report", report)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def play(self, query: str, timeout: float, name: str = "chromium") -> dict[str, Any]:
        """Chromium on ``/?QUERY`` until the page reports (``timeout`` seconds at most)."""
        flags = [
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection",
            f"--user-data-dir={self.workdir / (name + '-profile')}",
        ]
        url = f"http://127.0.0.1:{self.port}/?{query}"
        with (self.workdir / f"{name}.log").open("wb") as err:
            browser = subprocess.Popen(
                [chromium_path(), *CHROMIUM_FLAGS, *flags, url], stdout=subprocess.DEVNULL, stderr=err
            )
        try:
            return await asyncio.wait_for(self.reports.get(), timeout=timeout)
        finally:
            stop_process(browser, timeout=10)


async def run(workdir: Path, source: str, seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    camera: BarcodeCamera | None = None
    try:
        async with PageServer(workdir) as pages:
            with camflow_run(workdir, ["--offline-grace", "1", "--ladder", "source"]) as cf:
                stream = "cam"
                publish, view = cf.token("publish", stream), cf.token("view", stream)
                if source == "rtsp":
                    # Video only: ffmpeg pacing a -re audio input holds the piped pictures back (hundreds
                    # of ms, measured), which would be the test camera's latency, not camflow's.
                    camera = BarcodeCamera(cf.rtsp_url(stream, publish))
                query = (
                    f"source={source}&seconds={seconds}&warmup={WARMUP_S}"
                    f"&view={view}&publish={publish}&whep={cf.http_url('/whep/' + stream)}"
                    f"&whip={cf.http_url('/whip/' + stream)}"
                )
                result["page"] = await pages.play(query, timeout=seconds + 90)
                if camera is not None:
                    result["camera_errors"] = camera.stop()[-2000:]
                    camera = None
                await asyncio.sleep(0.5)  # the DELETE's session end is logged
                result["log"] = [line for line in cf.log.splitlines() if '"whep_' in line]
    finally:
        if camera is not None:
            camera.stop()
    return result


def main() -> None:
    workdir, source, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    started = time.monotonic()
    try:
        result = asyncio.run(run(workdir, source, seconds))
    except Exception as exc:
        result = {"error": repr(exc)}
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
