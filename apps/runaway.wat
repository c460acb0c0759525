;; runaway: starts fine, then its 100 ms timer handler never returns. The runtime must stop it when
;; the per-call time budget runs out (app state failed, "time budget exceeded") and keep other apps going.
(module
  (import "wasmbed" "timer_set" (func $timer_set (param i32 i32 i32) (result i32)))
  (func (export "app_start") (result i32)
    (drop (call $timer_set (i32.const 1) (i32.const 100) (i32.const 0)))
    (i32.const 0))
  (func (export "on_timer") (param $id i32)
    (loop $forever (br $forever))))
