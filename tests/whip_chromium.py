"""Browser as camera: headless Chromium publishes its (fake) camera over WHIP to `camflow run`.

    unshare -rn python -m tests.whip_chromium WORKDIR CODEC SECONDS   # prints one JSON line

Run inside a private network namespace that has only loopback (``unshare -rn``; this brings ``lo``
up): Chromium gathers ICE candidates on every interface, so the namespace is what keeps every
packet on 127.0.0.1. Inside it: `camflow run`, an aiohttp server for the publishing page (another
origin than camflow's: the WHIP POST goes through CORS), and Chromium with a fake camera and
microphone. The page offers only CODEC (h264 or vp8), POSTs the offer, sends SECONDS of video,
DELETEs the session and reports to the server. Then the HLS is probed with ffprobe. Every process
is stopped by PID. This module holds no tests (tests/test_whip_chromium.py runs it).
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

from tests.chromium import CHROMIUM_FLAGS, chromium_path
from tests.process import camflow_run, free_port, stop_process
from tests.test_pipeline_functional import ffprobe, wait_for_ended

PAGE = """<!doctype html><meta charset="utf-8"><title>WHIP publisher</title><body><script>
const params = new URLSearchParams(location.search);
const report = (what) => fetch('/report', {method: 'POST', body: JSON.stringify(what)});
(async () => {
  try {
    const codec = 'video/' + params.get('codec');
    const media = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: true});
    const pc = new RTCPeerConnection({iceServers: []});
    const states = [];
    pc.onconnectionstatechange = () => states.push(pc.connectionState);
    for (const track of media.getTracks()) pc.addTransceiver(track, {direction: 'sendonly'});
    const video = pc.getTransceivers().find(t => t.sender.track.kind === 'video');
    const caps = RTCRtpSender.getCapabilities('video').codecs;
    const wanted = caps.filter(c => c.mimeType.toLowerCase() === codec);
    if (!wanted.length) throw new Error('this Chromium cannot send ' + codec);
    video.setCodecPreferences([...wanted, ...caps.filter(c => c.mimeType.toLowerCase() === 'video/rtx')]);
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(done => {
      if (pc.iceGatheringState === 'complete') return done();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
      setTimeout(done, 5000);
    });
    const url = params.get('whip');
    const r = await fetch(url, {method: 'POST', body: pc.localDescription.sdp,
      headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + params.get('token')}});
    const answer = await r.text();
    if (r.status !== 201) throw new Error('POST ' + r.status + ' ' + answer);
    const session = new URL(r.headers.get('Location'), url);
    await pc.setRemoteDescription({type: 'answer', sdp: answer});
    await new Promise(done => setTimeout(done, Number(params.get('seconds')) * 1000));
    const stats = [];
    (await pc.getStats()).forEach(s => { if (s.type === 'outbound-rtp') stats.push(
      {kind: s.kind, frames: s.framesEncoded, codec: s.codecId, packets: s.packetsSent}); });
    const del = await fetch(session, {method: 'DELETE'});
    pc.close();
    await report({ok: true, status: r.status, delete: del.status, states, stats,
                  location: r.headers.get('Location'), etag: r.headers.get('ETag')});
  } catch (e) {
    await report({ok: false, error: String(e)});
  }
})();
</script>"""


async def run(workdir: Path, codec: str, seconds: float) -> dict[str, Any]:
    reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=4)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def report(request: web.Request) -> web.Response:
        reports.put_nowait(json.loads(await request.text()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/report", report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    page_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", page_port).start()
    result: dict[str, Any] = {}
    try:
        with camflow_run(workdir, ["--offline-grace", "1", "--ladder", "source"]) as cf:
            publish, view = cf.token("publish", "browser"), cf.token("view", "browser")
            url = (
                f"http://127.0.0.1:{page_port}/?codec={codec}&seconds={seconds}&token={publish}"
                f"&whip={cf.http_url('/whip/browser')}"
            )
            profile = workdir / "chromium-profile"
            flags = [
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--allow-loopback-in-peer-connection",
                f"--user-data-dir={profile}",
            ]
            with (workdir / "chromium.log").open("wb") as err:
                browser = subprocess.Popen(
                    [chromium_path(), *CHROMIUM_FLAGS, *flags, url], stdout=subprocess.DEVNULL, stderr=err
                )
            try:
                result["page"] = await asyncio.wait_for(reports.get(), timeout=seconds + 60)
            finally:
                stop_process(browser, timeout=10)
            master_url = cf.http_url(f"/live/browser/master.m3u8?token={view}")
            result["master"] = await asyncio.to_thread(wait_for_ended, master_url, 1, 60.0)
            result["probe"] = await asyncio.to_thread(ffprobe, master_url)
            audio_url = cf.http_url(f"/live/browser/audio.m3u8?token={view}")
            result["audio_probe"] = await asyncio.to_thread(ffprobe, audio_url)  # the AAC track alone
            lines = cf.log.splitlines()
            result["log"] = [line for line in lines if '"whip_' in line or "publish_ended" in line]
    finally:
        await runner.cleanup()
    return result


def main() -> None:
    workdir, codec, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    started = time.monotonic()
    try:
        result = asyncio.run(run(workdir, codec, seconds))
    except Exception as exc:
        result = {"error": repr(exc)}
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
