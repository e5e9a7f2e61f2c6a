// Receives ArrayBuffers, drops them and closes its worker: the runtime frees them (their
// finalizers run) on this thread, not on the one that made them.
self.onmessage = () => {
  self.postMessage('dropped')
  self.close()
}
