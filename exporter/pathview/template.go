package pathview

// pageHTML is the page. Sizes in the CSS and the SVG are the constants of page.go
// (HeaderH 76, SectionGap 16, PadX 16, DetailsH 168, BoxW 130, BoxH 64, TabH 10,
// LaneH 156, TitleH 70): change them together.
const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="referrer" content="no-referrer">
<title>{{.Title}}</title>
<style>
html, body { margin: 0; padding: 0; background: #fff; color: #222; font: 13px/18px sans-serif; }
header { height: 76px; box-sizing: border-box; margin: 0; padding: 8px 16px; overflow: hidden; border-bottom: 1px solid #ccc; }
header h1 { font-size: 18px; line-height: 24px; margin: 0; white-space: nowrap; }
header p { margin: 0; white-space: nowrap; }
header p.note { color: #a00; }
section.packet { display: block; margin: 0 0 16px 0; padding: 0 0 0 16px; }
section.packet svg { display: block; }
div.details { height: 168px; box-sizing: border-box; margin: 0; padding: 4px 8px; overflow: auto; border-left: 4px solid #ccc; background: #fafafa; width: max-content; min-width: 600px; max-width: 1200px; }
div.details dl { margin: 0; }
div.details dt { float: left; clear: left; width: 80px; font-weight: bold; }
div.details dd { margin: 0 0 0 88px; }
.lane0 { fill: #f4f6f9; } .lane1 { fill: #e9edf3; }
.lanename { font: bold 13px sans-serif; fill: #333; }
.t1 { font: bold 14px sans-serif; fill: #111; }
.t2 { font: 13px sans-serif; fill: #1a6b1a; }
.t2.bad { fill: #b00; font-weight: bold; }
.t3 { font: 12px sans-serif; fill: #555; }
.box { fill: #eef3f9; stroke: #4a78b5; stroke-width: 1; }
.tab { fill: #4a78b5; }
.label { font: bold 13px sans-serif; fill: #111; }
.sub, .delta { font: 11px sans-serif; fill: #333; }
.delta { fill: #555; }
.hop.drop .box, .hop.drop .tab { fill: #d62728; stroke: #d62728; }
.hop.stall .box, .hop.stall .tab { fill: #f0a30a; stroke: #f0a30a; }
.hop.lost .box, .hop.lost .tab { fill: #8c1c8c; stroke: #8c1c8c; }
.hop.drop .label, .hop.drop .sub, .hop.drop .delta, .hop.lost .label, .hop.lost .sub, .hop.lost .delta { fill: #fff; }
.marktext { font: 11px sans-serif; fill: #a00; }
.tunnel { font: 11px sans-serif; fill: #205080; }
.nat { font: bold 11px sans-serif; fill: #6a2c91; }
.natmark { fill: #6a2c91; }
.link { stroke: #777; stroke-width: 1.5; fill: none; }
.cross { stroke: #205080; stroke-width: 2.5; fill: none; stroke-dasharray: 8 4; }
.cross.lost { stroke: #8c1c8c; }
.crosstext { font: 11px sans-serif; fill: #205080; }
</style>
</head>
<body>
<header>
<h1>{{.Title}}</h1>
<p>{{len .Packets}} packets drawn, {{.Failed}} of them failed.</p>
{{range .Notes}}<p class="note">{{.}}</p>{{end}}
</header>
<main>
{{range .Packets}}{{$pk := .}}<section class="packet" id="packet-{{.Num}}" data-packet="{{.Num}}" data-kind="{{.Kind}}" data-verdict="{{.Verdict}}">
<svg xmlns="http://www.w3.org/2000/svg" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="packet {{.Num}}: {{.Title}}: {{.Summary}}">
<text class="t1" x="8" y="20">#{{.Num}} {{.Title}}</text>
<text class="t2{{if .Bad}} bad{{end}}" x="8" y="40">{{.Headline}}</text>
<text class="t3" x="8" y="60">{{.Ends}}{{if and .Ends .Note}} · {{end}}{{.Note}}</text>
{{range $i, $l := .Lanes}}<rect class="{{ifeven $i "lane0" "lane1"}}" x="0" y="{{add 70 (mul $i 156)}}" width="{{$pk.Width}}" height="156"/>
<text class="lanename" x="8" y="{{add 70 (add (mul $i 156) 82)}}" data-lane="{{$i}}">{{$l}}</text>
{{end}}{{range .Conns}}<path class="{{if .Lines}}cross{{if .Lost}} lost{{end}}{{else}}link{{end}}" d="{{.D}}"/>
{{$c := .}}{{range $k, $t := .Lines}}<text class="crosstext" x="{{$c.TX}}" y="{{add $c.TY (mul $k 14)}}">{{$t}}</text>
{{end}}{{end}}{{range .Steps}}<g class="hop{{if .Mark}} {{.Mark}}{{end}}" data-hop="{{.Index}}" data-node="{{.Node}}" data-ifname="{{.Ifname}}" data-kind="{{.Kind}}" data-dir="{{.Dir}}"{{if .Mark}} data-mark="{{.Mark}}"{{end}}{{if .NAT}} data-nat="{{.NAT}}"{{end}} data-delta="{{.Delta}}">
{{if .NAT}}<path class="natmark" d="M{{add .X 6}} {{add .Y -20}} l6 6 l-6 6 l-6 -6 z"/><text class="nat" x="{{add .X 16}}" y="{{add .Y -10}}">{{.NAT}}</text>
{{end}}<rect class="box" x="{{.X}}" y="{{.Y}}" width="130" height="64"/>
<rect class="tab" x="{{.X}}" y="{{.Y}}" width="130" height="10"/>
<text class="label" x="{{add .X 6}}" y="{{add .Y 26}}">{{.Label}}</text>
<text class="sub" x="{{add .X 6}}" y="{{add .Y 42}}">{{.Sub}}</text>
<text class="delta" x="{{add .X 6}}" y="{{add .Y 57}}">{{.Delta}}</text>
{{$s := .}}{{if .Tunnel}}<text class="tunnel" x="{{.X}}" y="{{add .Y 78}}">{{.Tunnel}}</text>
{{end}}{{range $k, $t := .MarkText}}<text class="marktext" x="{{$s.X}}" y="{{add $s.Y (add 92 (mul $k 14))}}">{{$t}}</text>
{{end}}</g>
{{end}}</svg>
{{if .Details}}<div class="details"><dl>
{{range .Details}}<dt>{{.Name}}</dt><dd>{{.Text}}</dd>
{{end}}</dl></div>
{{end}}</section>
{{end}}</main>
</body>
</html>
`
