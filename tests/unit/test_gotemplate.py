import pytest

from weavectl.gotemplate import TemplateError, render

REPORT = {"Router": {"Name": "aa:00:00:00:00:01", "Encryption": False, "Peers": [
    {"NickName": "h1", "Connections": [{"Address": "1.2.3.4:6783"}]}, {"NickName": "h2", "Connections": []}]},
    "IPAM": {"DefaultSubnet": "10.32.0.0/12", "Entries": None}}


@pytest.mark.parametrize("template,expected", [
    ("{{.Router.Name}}", "aa:00:00:00:00:01"),
    ("{{.IPAM.DefaultSubnet}}", "10.32.0.0/12"),
    ("{{.Router.Encryption}}", "false"),
    ("{{range .Router.Peers}}{{.NickName}} {{end}}", "h1 h2 "),
    ("{{len .Router.Peers}}", "2"),
    ("{{if .Router.Encryption}}on{{else}}off{{end}}", "off"),
    ("{{range .IPAM.Entries}}x{{else}}none{{end}}", "none"),
    ("{{json .IPAM}}", '{"DefaultSubnet": "10.32.0.0/12", "Entries": null}'),
    ('{{printf "peer %v" .Router.Name}}', "peer aa:00:00:00:00:01"),
    ("{{.IPAM.Entries}}", "<nil>"),
    ("name={{ .Router.Name }}!", "name=aa:00:00:00:00:01!"),
])
def test_render(template, expected):
    assert render(template, REPORT) == expected


@pytest.mark.parametrize("bad", ["{{.Router.Nope}}", "{{range .Router.Peers}}x", "{{end}}", "{{index .A 1}}"])
def test_errors_name_the_problem(bad):
    with pytest.raises(TemplateError):
        render(bad, REPORT)
