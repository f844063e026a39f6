# gnuplot script for scripts/bench/run: gnuplot -e "datadir='...'; outdir='...'" plots.gp
# Inputs (written by report.py / bench.py):
#   scale_start.dat, scale_reload.dat, scale_drain.dat:
#     workers  systempp(med min max)  nginx(med min max)  gunicorn(med min max)  linear-ref, NaN = not run
#   timeline_<server>.dat: t_s latency_ms ok      marks_<server>.dat: t_hup_s t_done_s
set datafile missing "NaN"
set terminal pngcairo size 1500,480 font "DejaVu Sans,11"

# --- start, reload and drain time against worker count --------------------------------
set output outdir."/scale.png"
set multiplot layout 1,3 title "Time against worker count (log-log; median of the runs, bars: min-max)"
set logscale xy
set xrange [0.7:400]
set xtics ("1" 1, "8" 8, "64" 64, "256" 256)
set grid xtics ytics mytics lc rgb "#dddddd"
set key bottom right Left reverse samplen 2 font ",10"
set xlabel "workers"
set ylabel "ms"
do for [m in "start reload drain"] {
  f = datadir."/scale_".m.".dat"
  set title (m eq "start" ? "cold start (launch -> all up + first 200)" : (m eq "reload" ? "rolling reload (HUP -> old gone, new up)" : "drain (TERM/QUIT -> every process exited)"))
  plot f using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb "#1f77b4" title "systempp", \
       f using 1:5:6:7 with yerrorlines lw 2 pt 5 lc rgb "#2ca02c" title "nginx", \
       f using 1:8:9:10 with yerrorlines lw 2 pt 9 lc rgb "#d62728" title "gunicorn", \
       f using 1:11 with lines dt 3 lw 1.5 lc rgb "#555555" title "linear (through systempp at 8)"
}
unset multiplot
unset logscale
unset xrange
unset xtics
set xtics auto

# --- latency of each request over time, across a series of reloads ---------------------
set terminal pngcairo size 1500,900 font "DejaVu Sans,11"
set output outdir."/reload_latency.png"
set multiplot layout 3,1 title "GET / on one keep-alive connection (1 request/ms), 8 workers; dashed: SIGHUP sent; red x: failed request"
set logscale y
set yrange [0.02:3000]
set ylabel "latency, ms"
set grid ytics lc rgb "#dddddd"
set key top right
do for [s in "systempp nginx gunicorn"] {
  set title s
  set xlabel (s eq "gunicorn" ? "seconds since the client started" : "")
  plot datadir."/marks_".s.".dat" using 1:(0.02):(0):(3000) with vectors nohead dt 2 lc rgb "#888888" title "SIGHUP", \
       datadir."/timeline_".s.".dat" using 1:($3 == 1 ? $2 : 1/0) with points pt 7 ps 0.25 lc rgb "#1f77b4" title "request", \
       datadir."/timeline_".s.".dat" using 1:($3 == 1 ? 1/0 : 1000) with points pt 2 ps 2 lw 2 lc rgb "#d62728" title "failed"
}
unset multiplot
