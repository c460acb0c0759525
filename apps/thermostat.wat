;; thermostat: every 500 ms reads temperature_mdeg, publishes topic "temperature" with the reading as
;; ASCII text ("31.500", "-2.250") and turns LED 0 on above config "threshold_mdeg" (default 30000).
;; A board without the sensor answers ENOTSUP (-2): the app logs that once and keeps trying.
(module
  (import "wasmbed" "log" (func $log (param i32 i32 i32)))
  (import "wasmbed" "timer_set" (func $timer_set (param i32 i32 i32) (result i32)))
  (import "wasmbed" "led_set" (func $led_set (param i32 i32) (result i32)))
  (import "wasmbed" "temperature_mdeg" (func $temperature (param i32) (result i32)))
  (import "wasmbed" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (import "wasmbed" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "temperature")                          ;; 11 bytes
  (data (i32.const 16) "threshold_mdeg")                      ;; 14 bytes
  (data (i32.const 32) "thermostat: no temperature sensor")  ;; 33 bytes
  ;; 96: i32 reading; 128..160: config value; 160..192: formatted text
  (global $threshold (mut i32) (i32.const 30000))
  (global $warned (mut i32) (i32.const 0))

  ;; Optional '-' then decimal digits at [ptr, ptr+len) -> value; returns 0x80000000 if malformed.
  (func $parse (param $ptr i32) (param $len i32) (result i32)
    (local $v i32) (local $d i32) (local $end i32) (local $neg i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.and (i32.gt_s (local.get $len) (i32.const 0)) (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 45)))
      (then (local.set $neg (i32.const 1)) (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))))
    (if (i32.ge_u (local.get $ptr) (local.get $end)) (then (return (i32.const 0x80000000))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
        (local.set $d (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48)))
        (if (i32.gt_u (local.get $d) (i32.const 9)) (then (return (i32.const 0x80000000))))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (local.get $d)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (br $next)))
    (if (result i32) (local.get $neg) (then (i32.sub (i32.const 0) (local.get $v))) (else (local.get $v))))

  ;; Decimal digits of unsigned $n at $ptr; returns the end pointer.
  (func $utoa (param $ptr i32) (param $n i32) (result i32)
    (local $len i32) (local $t i32) (local $end i32)
    (local.set $len (i32.const 1))
    (local.set $t (local.get $n))
    (block $counted
      (loop $count
        (br_if $counted (i32.lt_u (local.get $t) (i32.const 10)))
        (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (br $count)))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $t (local.get $end))
    (loop $digit
      (local.set $t (i32.sub (local.get $t) (i32.const 1)))
      (i32.store8 (local.get $t) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.gt_u (local.get $t) (local.get $ptr))))
    (local.get $end))

  (func (export "app_start") (result i32)
    (local $n i32) (local $v i32)
    (local.set $n (call $config_get (i32.const 16) (i32.const 14) (i32.const 128) (i32.const 32)))
    (if (i32.ge_s (local.get $n) (i32.const 0))
      (then
        (local.set $v (call $parse (i32.const 128) (local.get $n)))
        (if (i32.ne (local.get $v) (i32.const 0x80000000)) (then (global.set $threshold (local.get $v))))))
    (if (i32.lt_s (call $timer_set (i32.const 1) (i32.const 500) (i32.const 1)) (i32.const 0))
      (then (return (i32.const 1))))
    (i32.const 0))

  (func (export "on_timer") (param $id i32)
    (local $mdeg i32) (local $abs i32) (local $p i32) (local $frac i32)
    (if (i32.lt_s (call $temperature (i32.const 96)) (i32.const 0))
      (then
        (if (i32.eqz (global.get $warned))
          (then (global.set $warned (i32.const 1)) (call $log (i32.const 2) (i32.const 32) (i32.const 33))))
        (return)))
    (local.set $mdeg (i32.load (i32.const 96)))
    ;; "[-]<int>.<3 digits>" at 160
    (local.set $p (i32.const 160))
    (local.set $abs (local.get $mdeg))
    (if (i32.lt_s (local.get $mdeg) (i32.const 0))
      (then
        (i32.store8 (local.get $p) (i32.const 45))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (local.set $abs (i32.sub (i32.const 0) (local.get $mdeg)))))
    (local.set $p (call $utoa (local.get $p) (i32.div_u (local.get $abs) (i32.const 1000))))
    (local.set $frac (i32.rem_u (local.get $abs) (i32.const 1000)))
    (i32.store8 (local.get $p) (i32.const 46))
    (i32.store8 (i32.add (local.get $p) (i32.const 1)) (i32.add (i32.const 48) (i32.div_u (local.get $frac) (i32.const 100))))
    (i32.store8 (i32.add (local.get $p) (i32.const 2))
                (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $frac) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.add (local.get $p) (i32.const 3)) (i32.add (i32.const 48) (i32.rem_u (local.get $frac) (i32.const 10))))
    (drop (call $publish (i32.const 0) (i32.const 11) (i32.const 160)
                         (i32.sub (i32.add (local.get $p) (i32.const 4)) (i32.const 160))))
    (drop (call $led_set (i32.const 0) (i32.gt_s (local.get $mdeg) (global.get $threshold))))))
