// Upload one file with tus-js-client (Node), as a browser or app would.
//
//   node upload.mjs '{"file": "...", "endpoint": "http://127.0.0.1:PORT/files/", ...}'
//
// Options (JSON): file, endpoint, uploadUrl, chunkSize, parallelUploads,
// metadata, headers, urlStorage (a FileUrlStorage path: resume a previous
// upload of the same file), retryDelays (null: no retries), badChecksum /
// badOffset (corrupt the first PATCH through onBeforeRequest), uploadSize.
// Prints one JSON line per event ({"event": "start" | "success" | "error"});
// exits 0 on success, 1 on error.
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as tus from 'tus-js-client'

const opts = JSON.parse(process.argv[2])
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`)

let corrupted = false
const options = {
  endpoint: opts.endpoint ?? null,
  uploadUrl: opts.uploadUrl ?? null,
  chunkSize: opts.chunkSize ?? Number.POSITIVE_INFINITY,
  parallelUploads: opts.parallelUploads ?? 1,
  retryDelays: opts.retryDelays === undefined ? [0, 200, 500, 1000, 2000] : opts.retryDelays,
  metadata: opts.metadata ?? {},
  headers: opts.headers ?? {},
  removeFingerprintOnSuccess: false,
  storeFingerprintForResuming: Boolean(opts.urlStorage),
  onBeforeRequest(req) {
    if (req.getMethod() !== 'PATCH' || corrupted) return
    if (opts.badChecksum) {
      corrupted = true
      req.setHeader('Upload-Checksum', `sha1 ${createHash('sha1').update('not the body').digest('base64')}`)
    }
    if (opts.badOffset) {
      corrupted = true
      req.setHeader('Upload-Offset', String(Number(req.getHeader('Upload-Offset')) + 1))
    }
  },
  onSuccess() {
    say({ event: 'success', url: upload.url })
    process.exit(0)
  },
  onError(err) {
    const res = err.originalResponse
    say({
      event: 'error',
      status: res ? res.getStatus() : null,
      body: res ? res.getBody() : null,
      message: String(err.message ?? err),
    })
    process.exit(1)
  },
}
if (opts.uploadSize != null) options.uploadSize = opts.uploadSize
if (opts.urlStorage) options.urlStorage = new tus.FileUrlStorage(opts.urlStorage)

const upload = new tus.Upload(fs.createReadStream(opts.file), options)
say({ event: 'start', pid: process.pid })
if (opts.urlStorage) {
  const previous = await upload.findPreviousUploads()
  if (previous.length) {
    say({ event: 'resume', url: previous[0].uploadUrl })
    upload.resumeFromPreviousUpload(previous[0])
  }
}
upload.start()
