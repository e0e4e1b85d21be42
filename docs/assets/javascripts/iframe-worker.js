/* Search from a site opened from disk. Browsers refuse Web Workers on file:// pages, and Material's search
   runs in one; the offline plugin would load a shim for that from unpkg.com, which would be a request leaving
   the machine. This file (its name tells the plugin a shim is present) runs the worker script in a hidden
   iframe of the page instead, behind the same postMessage / "message" interface. It provides what Material's
   search worker uses; a site served over HTTP keeps real workers. */
(function () {
  "use strict";
  if (location.protocol !== "file:") {
    return;
  }

  class FileWorker extends EventTarget {
    constructor(url) {
      super();
      this.onmessage = null;
      this.onerror = null;
      this._ready = false;
      this._queue = [];
      this._frame = document.createElement("iframe");
      this._frame.hidden = true;
      (document.body || document.documentElement).appendChild(this._frame);
      const scope = this._frame.contentWindow;
      const worker = this;
      // the worker's global postMessage answers the page
      scope.postMessage = function (data) {
        setTimeout(function () {
          worker._emit("message", new MessageEvent("message", { data: data }));
        }, 0);
      };
      this._deliver = function (data) {
        scope.dispatchEvent(new scope.MessageEvent("message", { data: data }));
      };
      const script = scope.document.createElement("script");
      script.src = new URL(url, location.href).href;
      script.onload = function () {
        worker._ready = true;
        worker._queue.splice(0).forEach(worker._deliver);
      };
      script.onerror = function () {
        worker._emit("error", new ErrorEvent("error", { message: "cannot load the worker script " + url }));
      };
      scope.document.head.appendChild(script);
    }

    _emit(type, event) {
      this.dispatchEvent(event);
      const handler = this["on" + type];
      if (typeof handler === "function") {
        handler.call(this, event);
      }
    }

    postMessage(data) {
      if (this._ready) {
        const deliver = this._deliver;
        setTimeout(function () { deliver(data); }, 0);
      } else {
        this._queue.push(data);
      }
    }

    terminate() {
      this._frame.remove();
    }
  }

  window.Worker = FileWorker;
})();
